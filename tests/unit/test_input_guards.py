"""One test per hole closed by 'nothing lost on any input' (each fails on the code before it)."""

from __future__ import annotations

import copy
import logging
import os
import subprocess
import sys
import threading

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from aquaflow import config
from aquaflow.data import dataset, flowcam, imaging, inputs
from aquaflow.preprocess import pipeline
from aquaflow.synthetic import zooscan as zs
from tests.conftest import REPO

from .test_fault_injection import tiff_bomb

SCHEMA = REPO / "workflow/schemas/usecase.schema.yaml"


def usecase(name: str) -> dict:
    return config.validate(yaml.safe_load((REPO / f"config/usecases/{name}.yaml").read_text()), SCHEMA, name)


# --- decoding -----------------------------------------------------------------------------------


def test_pillow_guard_stays_on_after_import():
    code = (
        "import PIL.Image as I; d = I.MAX_IMAGE_PIXELS; import aquaflow.data.imaging; "
        "print(I.MAX_IMAGE_PIXELS == d)"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "True"


def test_opencv_fallback_checks_the_header_size_first(tmp_path):
    tiff_bomb(tmp_path / "bomb.tif", side=20000)  # 400 MP claimed; Pillow cannot read float RGB
    with pytest.raises(imaging.Rejected) as rej:
        imaging.load(tmp_path / "bomb.tif")
    assert rej.value.reason == imaging.TOO_LARGE and "20000x20000" in rej.value.detail
    # a small float RGB TIFF still decodes through the same path
    cv2.imwrite(str(tmp_path / "ok.tif"), np.full((6, 5, 3), 0.5, np.float32))
    assert imaging.load(tmp_path / "ok.tif").image.shape == (6, 5, 3)


def test_exif_orientation_is_applied(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :10] = 255  # white on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    Image.fromarray(img).save(tmp_path / "r.jpg", exif=exif, quality=95)
    dec = imaging.load(tmp_path / "r.jpg")
    assert dec.image.shape[:2] == (40, 20) and (dec.width, dec.height) == (20, 40)
    assert dec.image[:10].mean() > 200 and dec.image[-10:].mean() < 50  # left went to the top


def test_fifo_named_like_an_image_is_rejected_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    result = {}
    t = threading.Thread(target=lambda: result.update(r=_reason(tmp_path / "pipe.jpg")), daemon=True)
    t.start()
    t.join(5)
    assert result.get("r") == imaging.UNREADABLE


def _reason(path):
    try:
        imaging.read_bytes(path)
    except imaging.Rejected as rej:
        return rej.reason
    return None


def test_bad_file_names():
    assert _reason("") == imaging.BAD_FILE_NAME
    assert _reason("a\x00b.jpg") == imaging.BAD_FILE_NAME
    assert imaging.display_path(os.fsdecode(b"caf\xe9.jpg")) == "caf\\xe9.jpg"
    assert imaging.display_path("café.jpg") == "café.jpg"


# --- listings -----------------------------------------------------------------------------------


def test_listing_counts_what_it_skips(tmp_path):
    for name in ("a.jpg", "b.txt", ".DS_Store", "Thumbs.db", "sub/c.PNG", ".thumbs/x.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    os.mkfifo(tmp_path / "p.jpg")
    listing = dataset.scan_folder(tmp_path, (".jpg", ".png"))
    assert listing.paths == ["a.jpg", "sub/c.PNG"]
    assert listing.skipped == [
        (".DS_Store", "hidden"),
        (".thumbs", "hidden"),
        ("Thumbs.db", "extension"),
        ("b.txt", "extension"),
        ("p.jpg", "not_a_regular_file"),
    ]


def test_folder_input_with_a_latin1_name_is_written_and_recoverable(tmp_path):
    Image.new("RGB", (4, 4)).save(os.fsencode(tmp_path) + b"/caf\xe9.png")
    (tmp_path / "ok.png").write_bytes(b"")
    table = inputs.build([{"kind": "folder", "path": str(tmp_path), "extensions": [".png"]}], tmp_path)
    inputs.write(table, tmp_path / "inputs.parquet")  # pyarrow raised UnicodeEncodeError here
    back = pd.read_parquet(tmp_path / "inputs.parquet")
    assert back["source"].tolist() == [f"{tmp_path}/caf\\xe9.png", f"{tmp_path}/ok.png"]
    assert inputs.source_paths(back) == [os.fsencode(tmp_path) + b"/caf\xe9.png", f"{tmp_path}/ok.png"]
    assert inputs.read_skipped(tmp_path / "inputs.parquet") == {"counts": {}, "files": []}


def test_class_folder_root_images_and_bad_names_are_rejected_not_dropped(tmp_path):
    for i, label in enumerate(("a", "a", "a", "b", "b", "b")):
        (tmp_path / label).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / label / f"{i}.png"), np.full((8, 8, 3), i * 30, np.uint8))
    cv2.imwrite(str(tmp_path / "stray.png"), np.full((8, 8, 3), 99, np.uint8))
    Image.new("RGB", (8, 8), (1, 2, 3)).save(os.fsencode(tmp_path) + b"/a/\xe9t\xe9.png")
    cfg = {"layout": "class_folders", "extensions": [".png"], "split": {"seed": 0, "val": 0, "test": 0}}
    manifest, rejected, _ = dataset.build_manifest(tmp_path, cfg)
    assert len(manifest) == 6
    got = dict(zip(rejected["path"], rejected["reason"], strict=True))
    assert got == {"stray.png": "no_label_folder", "a/\\xe9t\\xe9.png": imaging.BAD_FILE_NAME}


def test_flowcam_rows_without_a_crop_box_are_kept_for_rejection(tmp_path):
    from aquaflow.synthetic.flowcam import write_run

    write_run(tmp_path, n_particles=3, per_collage=3, csv=True)
    csv = (tmp_path / "run.csv").read_text().splitlines()
    csv[1] = ",".join([*csv[1].split(",")[:5], "", "", "", ""])
    (tmp_path / "run.csv").write_text("\n".join(csv) + "\n")
    run = flowcam.list_run(tmp_path)
    assert run.loc[0, ["crop_x", "crop_y", "crop_w", "crop_h"]].tolist() == [-1, -1, -1, -1]
    from aquaflow.engine.items import Items, crop_of

    items = Items(inputs.source_paths(run), [crop_of(r) for r in run.to_dict("records")], 32, 10**9)
    assert items[0][3] == imaging.BAD_CROP_BOX  # not the whole collage
    assert items[1][1] is not None


# --- preprocess ---------------------------------------------------------------------------------


def test_a_bad_scan_is_rejected_and_the_others_processed(tmp_path):
    truth = zs.write_dataset(
        tmp_path / "raw", n_scans=2, height=500, width=700, n_single=3, n_pairs=1, seed=1
    )
    cfg = copy.deepcopy(usecase("zooscan")["preprocess"])
    cfg["segment"]["strip_rows"] = 100
    scans = sorted((tmp_path / "raw").glob(cfg["images"]))
    assert len(scans) == 2
    scans[0].write_bytes(scans[0].read_bytes()[:300])  # cut short in a copy
    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    pipeline.run(tmp_path / "raw", cfg, tmp_path / "out", figs)
    rejected = pd.read_parquet(tmp_path / "out" / "rejected.parquet")
    assert rejected["reason"].tolist() == [pipeline.BAD_SCAN]
    assert rejected["path"].tolist() == [str(scans[0].relative_to(tmp_path / "raw"))]
    items = pd.read_parquet(tmp_path / "out" / "items.parquet")
    assert 0 < len(items) < len(truth)  # the other scan's objects


def test_background_without_blank_keeps_the_scan(tmp_path):
    (tmp_path / "raw").mkdir()
    rng = np.random.default_rng(0)
    scan = rng.integers(80, 240, (40, 50)).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "raw" / "s.png"), scan)
    cfg = copy.deepcopy(usecase("zooscan")["preprocess"])
    cfg |= {"steps": ["background"], "images": "*.png"}
    cfg["background"] = {"method": "difference", "blanks": None, "flat": None, "window": 5}
    cfg["labels"] = {"kind": "none"}
    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    pipeline.run(tmp_path / "raw", cfg, tmp_path / "out", figs)
    out = cv2.imread(str(tmp_path / "out" / "corrected" / "s.png"), cv2.IMREAD_GRAYSCALE)
    assert np.array_equal(out, scan)  # was all white: background 1.0 instead of white


# --- training -----------------------------------------------------------------------------------


def test_no_validation_split_keeps_the_last_epoch_and_never_stops_early(tmp_path, monkeypatch, caplog):
    import mlflow

    from aquaflow.backends import torch_train as train
    from tests.conftest import tiny_usecase

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    # our loggers' own level: another library in this process may have raised the root's (roc-validator)
    caplog.set_level(logging.WARNING, logger="aquaflow")
    rows = []
    for i in range(8):
        label = "ab"[i % 2]
        (tmp_path / label).mkdir(exist_ok=True)
        cv2.imwrite(str(tmp_path / label / f"{i}.png"), np.full((16, 16, 3), 40 + 150 * (i % 2), np.uint8))
        rows.append({"id": f"{i:016x}", "path": f"{label}/{i}.png", "label": label, "split": "train"})
    uc = config.validate(tiny_usecase(), SCHEMA, "t")
    cfg = uc["training"] | {"epochs": 3, "batch_size": 4, "early_stopping": {"patience": 1, "min_delta": 1.0}}
    model_cfg = uc["model"] | {"input_size": 32}
    with mlflow.start_run():
        result, _ = train.train(pd.DataFrame(rows), tmp_path, ["a", "b"], model_cfg, cfg)
    # patience 1 with an unreachable min_delta stopped after epoch 2 when the training set was watched
    assert result.epochs_run == 3 and result.best_epoch == 3
    assert "no validation split" in caplog.text


# --- cross-key config checks --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "edit", "keys"),
    [
        (
            "flowcam",
            lambda uc: uc["inference"].update(backend="onnx", device="cuda"),
            ["inference.backend", "inference.device"],
        ),
        ("flowcam", lambda uc: uc["litter"].update(enabled=True), ["litter.enabled", "preprocess.steps"]),
        (
            "flowcam",
            lambda uc: uc["inference"].update(inputs=[{"kind": "preprocessed"}]),
            ["inference.inputs[0].kind", "preprocess.steps"],
        ),
        (
            "flowcam",
            lambda uc: uc["export"]["ecotaxa"].update(class_scores=["Tripos", "Tripod"]),
            ["export.ecotaxa.class_scores", "dataset.classes_file"],
        ),
        (
            "zooscan",
            lambda uc: uc["export"]["ecotaxa"].update(class_scores=["many"]),
            ["export.ecotaxa.class_scores", "dataset.classes"],
        ),
        (
            "zooscan",
            lambda uc: uc["litter"].update(categories=["single", "bottle"]),
            ["litter.categories", "dataset.classes"],
        ),
    ],
)
def test_cross_key_mistakes_name_both_keys(name, edit, keys):
    uc = usecase(name)
    config.check_usecase(uc, name)  # as shipped: consistent
    edit(uc)
    with pytest.raises(config.ConfigError) as err:
        config.check_usecase(uc, name)
    for key in keys:
        assert key in str(err.value)
