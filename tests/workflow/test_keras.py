"""Keras backend through the real workflow: a planktonclas model folder and a fine-tuned Keras
application in one workflow run, and a small Keras classifier (.keras + card) through the same
import and shard engine in this process, compared with Keras's / planktonclas's own predict paths."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

if importlib.util.find_spec("tensorflow") is None:  # the optional extra; `make test` installs it
    pytest.skip("TensorFlow is not installed (pip install '.[keras]')", allow_module_level=True)

from aquaflow.backends import keras_model as kb
from aquaflow.data import imaging
from aquaflow.data.inputs import build
from aquaflow.engine import infer
from aquaflow.io import read_json, sha256_file, write_json
from aquaflow.monitoring import tracking
from aquaflow.standards.dwca import COUNT
from aquaflow.standards.taxonomy import Taxon, write_table

from ..conftest import REPO, run_snakemake, write_workdir
from ..dwca_checks import read_archive

keras = kb.tf_setup(2)  # loads triton before TensorFlow (the reverse order segfaults)
# step scripts import this checkout's aquaflow, not an editable install of another checkout
ENV = {"PYTHONPATH": str(REPO / "scripts")}


def _planktonclas_albumentations_shim() -> None:
    """planktonclas.data_utils imports albumentations (not installed beside us). Its predict path
    with augmentation off uses only A.Resize, i.e. cv2.resize with INTER_LINEAR on uint8 images:
    give it exactly that, so the rest of its predict path is its own code."""
    if "albumentations" in sys.modules:
        return
    import cv2

    class Resize:
        def __init__(self, height, width, interpolation=cv2.INTER_LINEAR):
            self.size, self.interpolation = (width, height), interpolation

        def __call__(self, image):
            return {"image": cv2.resize(image, self.size, interpolation=self.interpolation)}

    shim = types.ModuleType("albumentations")
    shim.Resize = Resize
    sys.modules["albumentations"] = shim


def make_planktonclas_folder(root: Path, classes: list[str], size: int, files: list[str]) -> tuple:
    """A model folder written by planktonclas's own code: model_utils.create_model (ImageNet download
    swapped for weights=None, its only network access), model.save, model_utils.save_conf.
    DenseNet121: its "torch" preprocessing uses both mean_RGB and std_RGB. Random weights give
    nearly the same features for every image, so the head is scaled and centred on `files`' mean
    feature: the top-1 labels then differ between images and the label comparison bites."""
    _planktonclas_albumentations_shim()
    from planktonclas import config, model_utils, paths

    conf = config.get_conf_dict()
    conf["general"]["base_directory"] = str(root)
    conf["model"].update(
        {
            "modelname": "DenseNet121",
            "image_size": size,
            "num_classes": len(classes),
            "preprocess_mode": "torch",
        }
    )
    conf["dataset"].update({"mean_RGB": [131.2, 127.9, 120.4], "std_RGB": [44.1, 47.3, 50.2]})
    conf["augmentation"]["val_mode"] = None
    conf["training"]["l2_reg"] = 0
    paths.CONF, paths.timestamp = conf, "2026-11-27_080000"
    offline = types.SimpleNamespace(
        DenseNet121=lambda **kw: keras.applications.DenseNet121(**{**kw, "weights": None})
    )
    real = model_utils.applications
    model_utils.applications = offline
    try:
        keras.utils.set_random_seed(3)
        model, _, info = model_utils.create_model(conf)
    finally:
        model_utils.applications = real
    assert info["source"] == "keras_applications"
    x = np.stack([imaging.stretch(imaging.load(f).image, size) for f in files])
    norm = {"preprocess": "planktonclas", "mode": "torch"}
    norm.update({"mean_rgb": conf["dataset"]["mean_RGB"], "std_rgb": conf["dataset"]["std_RGB"]})
    feats = keras.Model(model.input, model.layers[-1].input).predict(kb.preprocess(x, norm), verbose=0)
    kernel, _ = model.layers[-1].get_weights()
    model.layers[-1].set_weights([kernel * 100.0, -100.0 * feats.mean(0) @ kernel])
    folder = Path(paths.get_timestamped_dir())
    for sub in ("ckpts", "conf", "dataset_files"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    model.save(folder / "ckpts" / "best_model.keras")
    conf["testing"]["ckpt_name"] = "best_model.keras"
    model_utils.save_conf(conf)
    (folder / "dataset_files" / "classes.txt").write_text("\n".join(classes) + "\n")
    return folder, conf


def make_images(root: Path, classes: list[str], per_class: int, seed: int = 0) -> list[Path]:
    """Class folders of synthetic PNGs whose colour and shape depend on the class (learnable)."""
    rng = np.random.default_rng(seed)
    files = []
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(40, 90, size=2)
            img = rng.integers(0, 60, size=(h, w, 3), dtype=np.uint8)
            img[..., k % 3] += np.uint8(150)
            img[h // 4 : h // 2, :: (k + 2)] = 255
            path = root / name / f"{name}_{i:03d}.png"
            path.write_bytes(imaging.encode(img))
            files.append(path)
    return files


def given_usecase(model_path: Path, images: Path, **model) -> dict:
    return {
        "model": {"source": "path", "path": str(model_path), "backend": "keras", **model},
        "inference": {"top_k": 3, "embeddings": True, "device": "cpu"},
        "campaigns": {"run1": {"inputs": [{"kind": "folder", "path": str(images)}]}},
        "export": {"ecotaxa": {"enabled": False}},
    }


def predictions_by_name(path: Path) -> pd.DataFrame:
    df = pd.read_parquet(path)
    df["name"] = df["source"].map(lambda s: Path(s).name)
    return df.set_index("name")


def trained_usecase(tmp: Path) -> dict:
    """`kt`: train_keras fine-tunes a keras.applications backbone (weights from disk) for one epoch
    on two classes of 8 made images, with every campaign capability of the engine."""
    classes = ["a", "b"]
    make_images(tmp / "data", classes, 8, seed=1)
    backbone = keras.applications.MobileNet(
        include_top=False, weights=None, input_shape=(64, 64, 3), pooling="avg"
    )
    backbone.save_weights(tmp / "backbone.weights.h5")
    (tmp / "s.csv").write_text(
        "eventID,eventDate,decimalLatitude,decimalLongitude\nkt_c,2024-05-08T10:00:00Z,51.2,2.9\n"
    )
    write_table(
        [
            Taxon("a", "Bacillariophyceae", 148899, "Class", "Chromista", "verified", "2026-01-01"),
            Taxon("b", "Biota", 1, "", "", "verified", "2026-01-01"),
        ],
        tmp / "taxa.tsv",
    )
    return {
        "source": {"kind": "path", "path": str(tmp / "data")},
        "dataset": {"layout": "class_folders", "split": {"val": 0.25, "test": 0.25}},
        "model": {
            "backend": "keras",
            "arch": "MobileNet",
            "input_size": 64,
            "pretrained": {"kind": "path", "path": str(tmp / "backbone.weights.h5")},
        },
        "training": {
            "epochs": 1,
            "batch_size": 4,
            "lr": 0.001,
            "warmup_epochs": 0,
            "augmentation": ["hflip", "rot90"],
            "class_weights": {"b": 2.0},
        },
        "inference": {"device": "cpu", "embeddings": True},
        # every campaign capability of the engine, for this backend too
        "campaigns": {"c": {"inputs": [{"kind": "dataset"}], "samples": {"path": str(tmp / "s.csv")}}},
        "drift": {"enabled": True, "on_drift": "warn", "batch": {"by": "folder", "min_size": 4}},
        "export": {"dwca": {"taxonomy": str(tmp / "taxa.tsv")}},
        "cv": {"folds": 3, "group": None, "seed": 0},
    }


@pytest.fixture(scope="module")
def keras_run(tmp_path_factory, planktonclas_resources) -> dict:
    """One workflow run, two use cases: `plankton` (a planktonclas folder of 3 real FlowCam classes
    through import_keras_model -> infer_shard -> infer_gather, 4 images per class) and `kt`
    (`trained_usecase`: train_keras -> evaluate -> campaign, MLflow, drift, exports; and `cv`)."""
    tmp = tmp_path_factory.mktemp("keras_wf")
    demo = planktonclas_resources / "demo-images"
    classes = sorted(p.name for p in demo.iterdir() if p.is_dir())[:3]
    flowcam = tmp / "flowcam"
    for c in classes:
        (flowcam / c).mkdir(parents=True)
        for f in sorted((demo / c).iterdir())[:4]:
            shutil.copy(f, flowcam / c / f.name)
    files = sorted(str(p) for p in flowcam.rglob("*.jpg"))
    folder, conf = make_planktonclas_folder(tmp / "plankton", classes, 64, files)
    kt = trained_usecase(tmp / "kt")
    wd = write_workdir(tmp / "wd", {"plankton": given_usecase(folder, flowcam), "kt": kt})
    run_snakemake(wd, "all", "cv", "--set-scatter", "infer=1", env=ENV)
    return {"wd": wd, "folder": folder, "conf": conf, "files": files, "classes": classes}


def test_given_planktonclas_folder_predicts_as_its_own_predict_path(keras_run):
    """The planktonclas folder through the workflow vs planktonclas.test_utils.predict (1 crop, no
    TTA): same top-1 labels and probabilities."""
    from planktonclas import test_utils

    run = keras_run
    wd, files, classes, conf = run["wd"], run["files"], run["classes"], run["conf"]
    model = keras.saving.load_model(run["folder"] / "ckpts" / "best_model.keras", compile=False)
    lab, prob = test_utils.predict(model, files, conf, top_K=3, crop_num=1)
    got = predictions_by_name(wd / "results/plankton/campaigns/run1/predictions.parquet")
    got = got.loc[[Path(f).name for f in files]]
    assert len(got) == len(files) == 12
    assert got["top1_label"].tolist() == [classes[i] for i in lab[:, 0]]
    assert got["top1_label"].nunique() > 1  # the model tells images apart
    np.testing.assert_allclose(got["top1_prob"], prob[:, 0], atol=1e-5)
    np.testing.assert_allclose(got["top2_prob"], prob[:, 1], atol=1e-5)
    pcard = read_json(wd / "results/plankton/model/model_card.json")
    assert pcard["resize"] == "stretch" and pcard["normalization"]["mean_rgb"] == conf["dataset"]["mean_RGB"]
    assert pcard["classes"] == classes and pcard["input_size"] == 64 and pcard["backend"] == "keras"
    assert got["model_id"].unique().tolist() == [pcard["id"]]


def test_given_keras_file_and_card_predict_as_model_predict(tmp_path):
    """A small Keras classifier trained a few steps here (logits out, mean/std card), saved as
    model.keras + model_card.json, through import_keras_model's and infer_shard's library calls
    (kb.import_model, infer.run_shard) vs model.predict on the same images, within 1e-5; the
    embeddings are its penultimate layer's."""
    tiny_classes = ["ciliate", "diatom", "detritus"]
    made = make_images(tmp_path / "made", tiny_classes, 6)
    x = np.stack([imaging.letterbox(imaging.load(p).image, 48) for p in made])
    y = np.repeat(np.arange(3), 6)
    keras.utils.set_random_seed(0)  # the same tiny model whatever ran before in this process
    inp = keras.Input((48, 48, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inp)
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    h = keras.layers.Dense(12, activation="relu", name="embed")(h)
    out = keras.layers.Dense(3, name="logits")(h)  # logits: the backend applies the softmax
    tiny = keras.Model(inp, out)
    tiny.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    norm = {"preprocess": "mean_std", "mean": [0.4, 0.45, 0.5], "std": [0.25, 0.2, 0.22]}
    tiny.fit(kb.preprocess(x, norm), y, epochs=3, batch_size=6, verbose=0)
    tiny_dir = tmp_path / "tiny"
    tiny_dir.mkdir()
    tiny.save(tiny_dir / "model.keras")
    card = {"format": "keras", "weights": "model.keras", "arch": "tiny_cnn", "classes": tiny_classes}
    write_json({**card, "input_size": 48, "normalization": norm}, tiny_dir / "model_card.json")

    model = tmp_path / "model"
    spec = {"source": "path", "path": str(tiny_dir), "safe_mode": True}  # what the rule passes
    tcard = kb.import_model(spec, model / "model.keras", model / "model_card.json")
    assert read_json(model / "model_card.json") == tcard and tcard["backend"] == "keras"
    assert tcard["id"] == sha256_file(tiny_dir / "model.keras") == sha256_file(model / "model.keras")
    table = build([{"kind": "folder", "path": str(tmp_path / "made"), "extensions": [".png"]}], None)
    out = tmp_path / "shard"
    summary = infer.run_shard(
        table,
        model / "model.keras",
        model / "model_card.json",
        out / "predictions.parquet",
        out / "rejected.parquet",
        out / "summary.json",
        top_k=3,
        batch_size=8,
        workers=0,
        device="cpu",
        embeddings=True,
    )
    assert summary["predicted"] == summary["seen"] == len(made) == 18

    ref = keras.activations.softmax(tiny.predict(kb.preprocess(x, norm), verbose=0)).numpy()
    got = predictions_by_name(out / "predictions.parquet").loc[[p.name for p in made]]
    assert got["top1_label"].tolist() == [tiny_classes[i] for i in ref.argmax(1)]
    assert got["top1_label"].nunique() > 1
    np.testing.assert_allclose(got["top1_prob"], ref.max(1), atol=1e-5)
    embed = keras.Model(tiny.input, tiny.get_layer("embed").output).predict(kb.preprocess(x, norm), verbose=0)
    np.testing.assert_allclose(np.stack(got["embedding"].to_numpy()), embed, atol=1e-5)
    assert got["model_id"].unique().tolist() == [tcard["id"]]


def test_train_keras_one_epoch_is_tracked_in_mlflow(keras_run):
    """train_keras fine-tunes a keras.applications backbone (weights from disk) for one epoch,
    evaluate runs on it (Keras predictor), and the MLflow run holds the metrics and the model folder."""
    classes = ["a", "b"]
    wd = keras_run["wd"]
    card = read_json(wd / "results/kt/model/model_card.json")
    assert card["backend"] == "keras" and card["format"] == "keras" and card["weights"] == "model.keras"
    assert card["normalization"] == {"preprocess": "keras_applications", "module": "mobilenet"}
    assert card["training"]["epochs_run"] == 1
    history = pd.read_csv(wd / "results/kt/model/history.tsv", sep="\t")
    assert history["epoch"].tolist() == [1]
    metrics = read_json(wd / "results/kt/eval/metrics.json")
    assert metrics["model_id"] == card["id"] and 0.0 <= metrics["accuracy"] <= 1.0
    low, high = metrics["intervals"]["accuracy"]  # the same bootstrap intervals as every backend
    assert low <= metrics["accuracy"] <= high

    import mlflow

    mlflow.set_tracking_uri(tracking.store_uri(card["mlflow"]["tracking_uri"], wd))
    run = mlflow.get_run(card["mlflow"]["run_id"])
    assert run.data.tags["backend"] == "keras" and run.data.tags["model_id"] == card["id"]
    assert "val_macro_f1" in run.data.metrics and run.data.params["model.arch"] == "MobileNet"
    assert run.data.params["training.class_weights.b"] == "2.0"
    client = mlflow.MlflowClient()
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert logged == {"model/model.keras", "model/model_card.json"}
    (version,) = client.search_model_versions("name='aquaflow_kt'")  # registered, as for torch
    assert version.run_id == run.info.run_id

    campaign = wd / "results/kt/campaigns/c"
    summary = read_json(campaign / "summary.json")
    assert summary["predicted"] == 16 and summary["model_id"] == card["id"]
    info = read_json(campaign / "mlflow_run.json")  # the campaign's inference run
    assert info["model_version"] == str(version.version)
    assert client.get_run(info["run_id"]).data.metrics["images_predicted"] == 16
    drift = read_json(campaign / "drift/drift.json")  # embeddings of the Keras model
    assert {b["batch"] for b in drift["batches"]} == {"a", "b"} and drift["unavailable"] == {}
    assert all(0 < b["tests"]["mmd"]["p_value"] <= 1 for b in drift["batches"])
    ecotaxa = pd.read_csv(campaign / "export/ecotaxa_kt_c.tsv", sep="\t", skiprows=[1])
    assert len(ecotaxa) == 16 and set(ecotaxa["object_annotation_category"]) <= set(classes)
    _, occurrences, emof = read_archive(campaign / "export/dwca_kt_c.zip")
    assert set(occurrences["scientificName"]) <= {"Bacillariophyceae", "Biota"}
    counts = emof[emof["measurementTypeID"] == COUNT[1]]["measurementValue"].astype(int)
    assert counts.sum() == summary["predicted"] == 16
    with zipfile.ZipFile(campaign / "export/rocrate_kt_c.zip") as crate:
        assert "ro-crate-metadata.json" in crate.namelist()


def test_cross_validation_trains_the_keras_recipe_per_fold(keras_run):
    """`snakemake cv` for a Keras use case: each fold a Keras model of the recipe, every labelled
    image predicted once out of fold, and the shipped model scored beside the estimate."""
    from tests.cv_checks import check_cv

    check_cv(keras_run["wd"] / "results/kt", k=3, weights="model.keras", arch="MobileNet")
