"""`aquaflow predict` with any model folder, dispatched on its card: Ultralytics detect / segment / obb
models (untrained YOLO11n built by the test, low conf) through the detection shard engine, and a Keras
classifier through the classification engine, on a folder of good and broken files.

Counts reconcile (every file in exactly one of counts or rejected, with its reason), the detection
table agrees with the per-image counts, and every predicted image carries the five image statistics
that drift monitoring tests (equal to `aquaflow.monitoring.drift.image_stats` of the decoded image)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from aquaflow.data import imaging
from aquaflow.monitoring import drift
from aquaflow.synthetic import scenes
from tests.conftest import REPO
from tests.given_yolo import write_models

KIND = {"detect": "fish", "segment": "coral", "obb": "diatoms"}
FAULTS = {"zero.jpg": "zero_bytes", "truncated.jpg": "truncated", "notes.png": "not_an_image"}


def _folder(tmp_path, kind: str) -> list:
    good = scenes.write_images(kind, tmp_path / "in", 5, (80, 96), seed=2)
    (tmp_path / "in/zero.jpg").write_bytes(b"")
    _, buf = cv2.imencode(".jpg", np.full((80, 80, 3), 120, np.uint8))
    (tmp_path / "in/truncated.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    (tmp_path / "in/notes.png").write_text("this is not an image\n")
    return good


def aquaflow(*args: str) -> subprocess.CompletedProcess:
    """The `aquaflow` command of this checkout, in a child process."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    cmd = [sys.executable, "-m", "aquaflow.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """One model folder per task, built in a child process (Ultralytics reads its env at import)."""
    root = tmp_path_factory.mktemp("given_yolo")
    return write_models(root, {t: list(scenes.KINDS[k][1]) for t, k in KIND.items()})


@pytest.mark.parametrize("task", list(KIND))
def test_predict_a_folder_with_an_ultralytics_model(models, tmp_path, task):
    good = _folder(tmp_path, KIND[task])
    out = tmp_path / "out"
    proc = aquaflow(
        "predict", "--model", str(models / task), str(tmp_path / "in"), "-o", str(out),
        "--conf", "0.001", "--max-det", "20", "--device", "cpu",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "5 predicted, " in proc.stdout and "3 rejected of 8" in proc.stdout and task in proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["seen"], summary["predicted"], summary["rejected"]) == (8, 5, 3)
    assert summary["rejected_by_reason"] == {r: 1 for r in FAULTS.values()}
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert {
        os.path.basename(s): r for s, r in zip(rejected["source"], rejected["reason"], strict=True)
    } == FAULTS
    counts = pd.read_parquet(out / "counts.parquet")
    table = pd.read_parquet(out / "predictions.parquet")
    assert sorted(map(os.path.basename, counts["source"])) == sorted(p.name for p in good)
    assert summary["detections"] == len(table) == counts["n"].sum() > 0  # a low conf finds something
    classes = list(scenes.KINDS[KIND[task]][1])
    for c in classes:
        assert counts[f"n_{c}"].sum() == (table["class"] == c).sum() == summary["per_class"].get(c, 0)
    if task == "obb":
        assert "obb_corners" in pq.read_schema(out / "predictions.parquet").names
    if task == "segment":
        assert table["rle"].str.len().gt(0).all()
    card = json.loads((models / task / "model_card.json").read_text())
    assert set(table["model_id"]) == {card["id"]}
    results = tmp_path / "results"
    shutil.copytree(models / task, results / KIND[task] / "model")
    listing = aquaflow("models", "--results", str(results))
    assert f"usecase={KIND[task]}\tmodel_id={card['id'][:16]}\ttask={task}\t" in listing.stdout
    for row in counts.itertuples(index=False):  # the drift statistics of every predicted image
        img = imaging.load(row.source).image
        want = drift.image_stats(img, img.shape[1], img.shape[0])
        got = np.array([getattr(row, c) for c in drift.STAT_COLUMNS], np.float32)
        np.testing.assert_allclose(got, want, rtol=1e-5)
        assert (row.image_width, row.image_height) == (96, 80)


def test_predict_a_folder_with_a_keras_model(tmp_path):
    """A Keras classifier folder (model.keras + card) goes through the classification engine."""
    from aquaflow.backends import keras_model as kb
    from aquaflow.io import write_json

    keras = kb.tf_setup(1)
    (tmp_path / "model").mkdir()
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    keras.Model(inp, keras.layers.Dense(2, activation="softmax")(x)).save(tmp_path / "model" / "model.keras")
    card = {
        "format": "keras",
        "arch": "tiny_cnn",
        "classes": ["clear", "turbid"],
        "input_size": 16,
        "normalization": {"preprocess": "scale"},
    }
    write_json(card, tmp_path / "model" / "model_card.json")
    _folder(tmp_path, "fish")
    out = tmp_path / "out"
    proc = aquaflow(
        "predict", "--model", str(tmp_path / "model"), str(tmp_path / "in"), "-o", str(out),
        "--top-k", "2", "--embeddings",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "5 predicted, 3 rejected of 8" in proc.stdout and "classify" in proc.stdout
    pred = pd.read_parquet(out / "predictions.parquet")
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert {
        os.path.basename(s): r for s, r in zip(rejected["source"], rejected["reason"], strict=True)
    } == FAULTS
    assert len(pred) == 5 and set(pred["top1_label"]) <= set(card["classes"])
    np.testing.assert_allclose(pred["top1_prob"] + pred["top2_prob"], 1.0, atol=1e-5)
    assert {*drift.STAT_COLUMNS, "embedding"} <= set(pred.columns) and len(pred["embedding"].iloc[0]) == 4
