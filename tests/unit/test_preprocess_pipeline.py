"""The preprocess step runner on small generated data, the litter summary and the class-weight hooks."""

from __future__ import annotations

import copy

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml

from aquaflow.config import ConfigError, validate
from aquaflow.data import balance
from aquaflow.data.dataset import build_manifest
from aquaflow.preprocess import pipeline
from aquaflow.standards import ecotaxa
from aquaflow.synthetic import litter as synth_litter
from aquaflow.synthetic import zooscan as zs
from aquaflow.tasks.classify import litter
from tests.conftest import REPO

SCHEMA = REPO / "workflow/schemas/usecase.schema.yaml"


def usecase(name: str) -> dict:
    return validate(yaml.safe_load((REPO / f"config/usecases/{name}.yaml").read_text()), SCHEMA, name)


def run(tmp_path, root, cfg):
    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    steps = pipeline.run(root, cfg, tmp_path / "out", figs)
    return steps, tmp_path / "out"


def test_zooscan_steps_make_a_labelled_training_folder(tmp_path):
    truth = zs.write_dataset(
        tmp_path / "raw", n_scans=2, height=700, width=900, n_single=8, n_pairs=4, seed=2
    )
    uc = usecase("zooscan")
    uc["preprocess"]["segment"]["strip_rows"] = 200
    steps, out = run(tmp_path, tmp_path / "raw", uc["preprocess"])
    assert steps["step"].tolist() == ["background", "segment", "separate"]
    assert steps["items_out"].tolist()[:2] == [2, len(truth)]
    items = pd.read_parquet(out / "items.parquet")
    assert len(items) == steps["items_out"].iloc[2] and items["object_name"].is_unique
    # separation replaced the multiple objects by their parts (tests/unit/test_zooscan_multiples.py)
    n_organisms = int(truth["n_organisms"].sum())
    assert len(truth) < len(items) and abs(len(items) - n_organisms) < n_organisms - len(truth)
    assert {"object_area", "object_esd", "object_major", "image", "image_file", "path"} <= set(items.columns)
    assert all((out / p).is_file() for p in items["path"])
    manifest, rejected, classes = build_manifest(out, uc["dataset"])
    assert classes == ["multiple", "single"] and rejected.empty
    counts = manifest["label"].value_counts().to_dict()
    assert counts == truth["label"].value_counts().to_dict()
    ba = cv2.imread(str(tmp_path / "ba.png"), cv2.IMREAD_GRAYSCALE)
    assert ba.shape[1] > ba.shape[0]  # scan | subtracted side by side
    left, right = ba[:, : ba.shape[1] // 2 - 4], ba[:, ba.shape[1] // 2 + 4 :]
    assert np.median(right) > np.median(left) + 20  # the background turned white


def test_litter_patchify_labels_every_tile(tmp_path):
    truth = synth_litter.write_dataset(tmp_path / "raw", n_images=2, rows=3, cols=4, seed=1)
    uc = usecase("litter")
    steps, out = run(tmp_path, tmp_path / "raw", uc["preprocess"])
    assert steps["items_out"].tolist() == [len(truth)]
    items = pd.read_parquet(out / "items.parquet")
    assert {"tile_row", "tile_col", "tile_x", "tile_y", "tile_w", "tile_h"} <= set(items.columns)
    got = items.assign(label=[p.split("/")[1] for p in items["path"]])
    merged = got.merge(truth, left_on=["image", "tile_row", "tile_col"], right_on=["image", "row", "col"])
    assert len(merged) == len(truth) and (merged["label_x"] == merged["label_y"]).all()


def test_dedup_step_and_rolling_median_background(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "raw").mkdir()
    scene = cv2.GaussianBlur(rng.integers(60, 250, (64, 96)).astype(np.uint8), (0, 0), 3)
    names = []
    for i in range(6):
        frame = scene.copy()
        frame[20:30, 5 + 12 * i : 15 + 12 * i] = 0  # a moving particle
        for k in range(2 if i % 2 == 0 else 1):  # frames 0, 2, 4 are recorded twice
            name = f"f{i:02d}_{k}.png"
            noisy = np.clip(frame.astype(int) + rng.integers(-2, 3, frame.shape), 0, 255).astype(np.uint8)
            cv2.imwrite(str(tmp_path / "raw" / name), noisy)
            names.append(name)
    cfg = usecase("zooscan")["preprocess"]
    cfg = copy.deepcopy(cfg) | {"steps": ["dedup", "background"], "images": "*.png"}
    cfg["background"] = {"method": "rolling_median", "window": 3, "blanks": None, "flat": None}
    cfg["dedup"] = {"hash": "phash", "threshold": 4, "window": 5}
    cfg["labels"] = {"kind": "none"}
    steps, out = run(tmp_path, tmp_path / "raw", cfg)
    assert steps["items_in"].tolist() == [9, 6] and steps["items_out"].tolist() == [6, 6]
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert set(rejected["reason"]) == {"near_duplicate"}
    assert sorted(rejected["path"]) == ["f00_1", "f02_1", "f04_1"]
    items = pd.read_parquet(out / "items.parquet")
    assert len(items) == 6
    last = cv2.imread(str(out / items["path"].iloc[-1]), cv2.IMREAD_GRAYSCALE)
    assert (last[20:30, 65:75] < 128).all() and np.median(last) > 240  # particle kept, scene gone


def test_unknown_preprocess_key_fails_naming_it():
    uc = yaml.safe_load((REPO / "config/usecases/zooscan.yaml").read_text())
    uc["preprocess"]["segment"]["treshold"] = 200
    with pytest.raises(ConfigError, match=r"preprocess\.segment\.treshold"):
        validate(uc, SCHEMA, "zooscan")
    uc = yaml.safe_load((REPO / "config/usecases/zooscan.yaml").read_text())
    uc["preprocess"]["steps"] = ["background", "sharpen"]
    with pytest.raises(ConfigError, match="sharpen"):
        validate(uc, SCHEMA, "zooscan")


def test_litter_summary_counts_and_area():
    preds = pd.DataFrame(
        {
            "image": ["a"] * 4 + ["b"] * 2,
            "tile_w": [128, 128, 128, 64, 128, 128],
            "tile_h": [128] * 6,
            "top1_label": ["bag", "water", "bag", "sand", "net", "net"],
        }
    )
    s = litter.summarise(preds, ["bag", "net", "sand", "water"], ["bag", "net"], gsd_cm=0.5)
    row = s.set_index(["image", "category"])
    assert row.loc[("a", "bag"), "tiles"] == 2
    assert row.loc[("a", "bag"), "area_m2"] == pytest.approx(2 * 0.64**2)
    assert row.loc[("a", "sand"), "area_m2"] == pytest.approx(0.32 * 0.64)  # edge tile: its part
    assert row.loc[("a", "net"), "tiles"] == 0 and row.loc[("b", "net"), "tiles"] == 2
    assert s.groupby("image")["share_of_image"].sum().to_numpy() == pytest.approx([1.0, 1.0])
    img = np.zeros((128, 448, 3), np.uint8)
    tiles = preds[preds["image"] == "a"].assign(tile_x=[0, 128, 256, 384], tile_y=0)
    ov = litter.overlay(img, tiles, ["bag", "net", "sand", "water"], ["bag", "net"])
    assert ov.shape[1] == 448 and ov.shape[0] > 128
    assert ov[64, 64].any() and not ov[64, 192].any()  # litter tile filled, water tile left as is


def test_class_weight_overrides_and_class_scores():
    w = balance.class_weights(np.array([0, 0, 0, 1]), 2)
    out = balance.apply_overrides(w, ["multiple", "single"], {"multiple": 4})
    assert out[0] == pytest.approx(4 * w[0]) and out[1] == pytest.approx(w[1])
    assert balance.apply_overrides(None, ["multiple", "single"], {"multiple": 4}).tolist() == [4.0, 1.0]
    assert balance.apply_overrides(None, ["a"], {}) is None
    with pytest.raises(ValueError, match="multipel"):
        balance.apply_overrides(w, ["multiple", "single"], {"multipel": 4})
    preds = pd.DataFrame(
        {
            "top1_label": ["single", "multiple"],
            "top1_prob": [0.7, 0.9],
            "top2_label": ["multiple", "single"],
            "top2_prob": [0.3, 0.1],
        }
    )
    assert ecotaxa.class_probability(preds, "multiple", 2).tolist() == [0.3, 0.9]
