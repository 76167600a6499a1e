"""Ultralytics classification as a backend: our engine's decoding + predictor give Ultralytics' own
labels and probabilities; cards come from the checkpoint; a checkpoint of another task is refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aquaflow.backends import load_predictor
from aquaflow.backends.yolo import checkpoint
from aquaflow.backends.yolo import classify as yolo_cls
from aquaflow.data import imaging
from aquaflow.data.inputs import build
from aquaflow.engine import infer
from aquaflow.io import sha256_file, write_json
from aquaflow.models.artifacts import ModelCardError, validate_card

from ..wf_a_models import IMGSZ, odd_images, tiny_cls_pt, ultralytics_probs  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, planktonclas_resources, tiny_cls_pt):  # noqa: F811
    """The trained checkpoint (shared, read-only), its model folder (model.pt + card) and test
    images of every shape."""
    work = tmp_path_factory.mktemp("yolo_cls")
    best = tiny_cls_pt
    folder = work / "model"
    folder.mkdir()
    (folder / "model.pt").write_bytes(best.read_bytes())
    net, ckpt = checkpoint.load(folder / "model.pt")
    write_json(checkpoint.make_card(net, ckpt, folder / "model.pt"), folder / "model_card.json")
    crops = sorted((planktonclas_resources / "demo-images").rglob("*.jpg"))[::4]  # 27 real crops
    images = work / "images"
    images.mkdir()
    for p in crops:  # copies: a link out of the input folder is rejected as outside_root
        shutil.copyfile(p, images / f"{p.parent.name}_{p.name}")
    odd_images(crops, images)
    return {"best": best, "folder": folder, "images": images, "work": work}


def test_center_crop_is_torchvision_resize_and_center_crop():
    import torchvision.transforms as T

    rng = np.random.default_rng(0)
    for h, w, size in [
        (30, 34, 32),
        (555, 283, 32),
        (20, 200, 48),
        (12, 17, 32),
        (32, 32, 32),
        (47, 33, 224),
    ]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        ref = np.asarray(T.Compose([T.Resize(size), T.CenterCrop(size)])(Image.fromarray(img)))
        got = imaging.center_crop(img, size)
        assert got.shape == (size, size, 3)
        np.testing.assert_array_equal(got, ref)


def test_card_comes_from_the_checkpoint(tiny):
    from ultralytics import YOLO

    card = json.loads((tiny["folder"] / "model_card.json").read_text())
    validate_card(dict(card))
    names = YOLO(str(tiny["best"])).names
    assert card["classes"] == [names[i] for i in range(len(names))]
    assert card["input_size"] == IMGSZ and card["task"] == "classify"
    assert card["format"] == card["backend"] == "ultralytics" and card["arch"] == "yolo11n-cls.yaml"
    assert card["id"] == sha256_file(tiny["folder"] / "model.pt")
    assert card["resize"] == "center_crop"
    assert card["normalization"]["mean"] == [0.0] * 3 and card["normalization"]["std"] == [1.0] * 3


def test_engine_predictions_equal_ultralytics_predict(tiny, tmp_path):
    """Every image (real crops 30x34 .. 555x283 px, wide, tall, smaller than the input, grey) through
    the shard engine (Items decoding, batches of 8) vs Ultralytics' predict on the file path."""
    table = build(
        [{"kind": "folder", "path": str(tiny["images"]), "extensions": [".jpg", ".png"]}], None, None
    )
    summary = infer.run_shard(
        table,
        tiny["folder"] / "model.pt",
        tiny["folder"] / "model_card.json",
        tmp_path / "p.parquet",
        tmp_path / "r.parquet",
        tmp_path / "s.json",
        top_k=6,
        batch_size=8,
        workers=0,
        device="cpu",
        embeddings=True,
    )
    assert summary["predicted"] == summary["seen"] == len(list(tiny["images"].iterdir())) == 33
    pred = pd.read_parquet(tmp_path / "p.parquet").sort_values("seq")
    classes = json.loads((tiny["folder"] / "model_card.json").read_text())["classes"]
    ours = np.zeros((len(pred), len(classes)), np.float32)
    for k in range(1, 7):
        idx = pred[f"top{k}_label"].map(classes.index).to_numpy()
        ours[np.arange(len(pred)), idx] = pred[f"top{k}_prob"].to_numpy()
    theirs = ultralytics_probs(tiny["best"], [Path(s) for s in pred["source"]])
    assert np.abs(ours - theirs).max() <= 1e-5
    assert (pred["top1_label"].to_numpy() == np.array(classes)[theirs.argmax(1)]).all()
    assert np.ptp(theirs, axis=1).min() > 1e-3  # a model that separates classes, not a uniform one
    assert len(pred["embedding"].iloc[0]) == 1280  # the head's pooled features


def test_predictor_refuses_other_tasks(tiny, tmp_path):
    """A detection checkpoint (or a card saying detect) never reaches the classification engine."""
    from ultralytics import YOLO

    det = tmp_path / "det" / "model.pt"
    det.parent.mkdir()
    YOLO("yolo11n.yaml", task="detect").save(str(det))
    card = json.loads((tiny["folder"] / "model_card.json").read_text())
    with pytest.raises(ModelCardError, match=r"'detect' model but .* is 'classify'"):
        load_predictor(det, card, "cpu")
    with pytest.raises(ModelCardError, match=r"'detect' model but .* is 'classify'"):
        load_predictor(tiny["folder"] / "model.pt", {**card, "task": "detect"}, "cpu")
    with pytest.raises(ValueError, match="onnx"):
        load_predictor(tiny["folder"] / "model.pt", card, "cpu", runtime="onnx")


def test_import_reads_the_task_and_card_from_the_checkpoint(tiny, tmp_path):
    from ultralytics import YOLO

    out = tmp_path / "out"
    card = checkpoint.import_model(
        {"source": "path", "path": str(tiny["best"])}, "classify", out / "model.pt", out / "model_card.json"
    )
    assert card["id"] == sha256_file(tiny["best"]) == sha256_file(out / "model.pt")
    assert card["classes"] == json.loads((tiny["folder"] / "model_card.json").read_text())["classes"]
    assert json.loads((out / "model_card.json").read_text())["imported_from"]["path"] == str(tiny["best"])
    det = tmp_path / "model.pt"
    YOLO("yolo11n-seg.yaml", task="segment").save(str(det))
    with pytest.raises(
        ModelCardError,
        match=r"model\.pt is an Ultralytics 'segment' model but the use case's task is 'classify'",
    ):
        checkpoint.import_model(
            {"source": "path", "path": str(det)}, "classify", out / "x.pt", out / "x.json"
        )
    with pytest.raises(ModelCardError, match="'classify' model but the use case's task is 'obb'"):
        checkpoint.import_model(
            {"source": "path", "path": str(tiny["best"])}, "obb", out / "x.pt", out / "x.json"
        )
    lying = tmp_path / "lying"
    lying.mkdir()
    (lying / "model.pt").write_bytes(tiny["best"].read_bytes())
    good = json.loads((tiny["folder"] / "model_card.json").read_text())
    write_json({**good, "classes": good["classes"][::-1]}, lying / "model_card.json")
    with pytest.raises(ModelCardError, match="says classes"):
        checkpoint.import_model(
            {"source": "path", "path": str(lying)}, "classify", out / "x.pt", out / "x.json"
        )
    assert not (out / "x.pt").exists()


def test_aquaflow_predict_gives_ultralytics_labels(tiny, tmp_path):
    """`aquaflow predict --model <folder with model.pt + model_card.json>` gives Ultralytics' labels;
    an obb checkpoint runs as a detector (its own task), writing per-image counts."""
    from ultralytics import YOLO

    from aquaflow import cli

    out = tmp_path / "out"
    args = ["predict", str(tiny["images"]), "-o", str(out), "--top-k", "6", "--device", "cpu"]
    assert cli.main([*args, "--model", str(tiny["folder"])]) == 0
    pred = pd.read_parquet(out / "predictions.parquet").sort_values("seq")
    assert len(pred) == 33 and json.loads((out / "summary.json").read_text())["rejected"] == 0
    theirs = ultralytics_probs(tiny["best"], [Path(s) for s in pred["source"]])
    classes = json.loads((tiny["folder"] / "model_card.json").read_text())["classes"]
    assert (pred["top1_label"].to_numpy() == np.array(classes)[theirs.argmax(1)]).all()
    assert np.abs(pred["top1_prob"].to_numpy() - theirs.max(1)).max() <= 1e-5
    obb = tmp_path / "obb"
    obb.mkdir()
    YOLO("yolo11n-obb.yaml", task="obb").save(str(obb / "model.pt"))
    net, ckpt = checkpoint.load(obb / "model.pt")
    write_json(checkpoint.make_card(net, ckpt, obb / "model.pt"), obb / "model_card.json")
    # no use case to disagree with: the command runs a checkpoint as the task it was trained for
    assert cli.main([*args[:3], str(tmp_path / "obb_out"), "--device", "cpu", "--model", str(obb)]) == 0
    summary = json.loads((tmp_path / "obb_out" / "summary.json").read_text())
    assert summary["predicted"] == 33 and (tmp_path / "obb_out" / "counts.parquet").exists()


def test_train_args_map_the_training_section():
    t = {
        "epochs": 2, "batch_size": 8, "optimizer": "sgd", "lr": 0.01, "weight_decay": 0.0,
        "scheduler": "none", "warmup_epochs": 0, "label_smoothing": 0.1,
        "augmentation": ["vflip", "rot90"], "balancing": "weights",
        "class_weights": {}, "early_stopping": {"patience": 0}, "freeze_epochs": 0, "backbone_lr_scale": 1.0,
        "seed": 1, "num_workers": 0, "device": "cpu", "amp": True,
    }  # fmt: skip
    args, unused = yolo_cls.train_args({"input_size": 48}, t, Path("d"), Path("w"), False)
    assert args["optimizer"] == "SGD" and args["lrf"] == 1.0 and not args["cos_lr"]
    assert (args["fliplr"], args["flipud"], args["scale"], args["hsv_v"]) == (0.0, 0.5, 0.0, 0.0)
    assert args["imgsz"] == 48 and args["amp"] is False and args["patience"] == 3 and args["nbs"] == 8
    assert unused == ["augmentation rot90", "balancing / class_weights", "label_smoothing"]
    with pytest.raises(ValueError, match="step"):
        yolo_cls.train_args({"input_size": 48}, {**t, "scheduler": "step"}, Path("d"), Path("w"), False)
    with pytest.raises(ValueError, match=r"yolo11n-cls\.yaml"):
        yolo_cls.build("mobilenetv4_conv_small")


def test_config_refuses_what_an_ultralytics_classifier_cannot_do():
    from aquaflow.config import ConfigError, check_usecase

    uc = {"task": "classify", "model": {"backend": "ultralytics", "arch": "mobilenetv4_conv_small"}}
    with pytest.raises(ConfigError, match=r"'model\.arch' is 'mobilenetv4_conv_small'"):
        check_usecase(uc, "uc.yaml")
    uc = {
        "task": "classify",
        "model": {"backend": "ultralytics", "source": "path"},
        "inference": {"backend": "onnx"},
    }
    with pytest.raises(ConfigError, match=r"'inference\.backend: onnx' is for timm models"):
        check_usecase(uc, "uc.yaml")
    check_usecase(
        {"task": "classify", "model": {"backend": "ultralytics", "arch": "yolo11n-cls.yaml"}}, "uc.yaml"
    )
