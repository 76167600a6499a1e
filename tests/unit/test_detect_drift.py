"""Drift for detection-type tasks on synthetic batches whose truth is known, the image statistics of
the detection shard engine, and the MLflow inference run of a detection campaign (real store)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from aquaflow.data import imaging
from aquaflow.monitoring import drift, tracking

CLASSES = ["sparus", "diplodus"]
CFG = {
    "detectors": ["mmd", "stats", "label_shift"],
    "univariate_test": "ks",
    "alpha": 0.05,
    "correction": "holm",
    "permutations": 200,
    "sample_size": 200,
    "seed": 0,
    "batch": {"by": "batch", "size": 1000, "min_size": 30},
}


def _images(rng, n, brightness=100.0, lam=(2.0, 1.0)):
    """Per-image rows of a detection campaign: image statistics and Poisson detections per class."""
    stats = np.column_stack(
        [
            rng.normal(96, 4, n),
            rng.normal(1.0, 0.02, n),
            rng.normal(brightness, 8, n),
            rng.normal(40, 3, n),
            rng.normal(300, 30, n),
        ]
    ).astype(np.float32)
    counts = np.column_stack([rng.poisson(m, n) for m in lam])
    return stats, counts


def _reference(rng, n=400):
    stats, counts = _images(rng, n)
    return {
        "stats": stats,
        "counts": counts.astype(np.int64),
        "classes": np.array(CLASSES),
        "train_labels": np.array(CLASSES),
        "train_counts": np.array([120, 60]),
        "model_id": np.array("m" * 64),
    }


def _campaign(batches: dict[str, tuple[np.ndarray, np.ndarray]]) -> pd.DataFrame:
    frames = []
    for name, (stats, counts) in batches.items():
        f = pd.DataFrame(stats, columns=list(drift.STAT_COLUMNS))
        f["n"] = counts.sum(1)
        for j, c in enumerate(CLASSES):
            f[f"n_{c}"] = counts[:, j]
        f["batch"] = name
        frames.append(f)
    out = pd.concat(frames, ignore_index=True)
    out["seq"] = np.arange(len(out))
    out["source"] = [f"/x/{i}.png" for i in range(len(out))]
    return out


def test_shifted_batches_are_flagged_by_the_expected_test_and_in_distribution_ones_are_not():
    rng = np.random.default_rng(1)
    ref = _reference(rng)
    preds = _campaign(
        {
            "same_a": _images(rng, 80),
            "same_b": _images(rng, 80),
            "more_diplodus": _images(rng, 80, lam=(2.0, 3.0)),  # class counts shift, images do not
            "darker": _images(rng, 80, brightness=70.0),  # images shift, class counts do not
        }
    )
    rep = drift.detect(preds, ref, CFG)
    b = {x["batch"]: x for x in rep["batches"]}
    assert set(rep["unavailable"]) == {"mmd"} and "embeddings" in rep["unavailable"]["mmd"]
    expected = {"count_total", "count_sparus", "count_diplodus"} | {f"ks_{s}" for s in drift.STATS}
    assert set(b["same_a"]["tests"]) == expected  # 8 tests, Holm-corrected together, no mmd
    assert b["same_a"]["drift"] is False and b["same_b"]["drift"] is False
    flagged = lambda name: {k for k, t in b[name]["tests"].items() if t["drift"]}  # noqa: E731
    assert b["more_diplodus"]["drift"] is True and "count_diplodus" in flagged("more_diplodus")
    assert not any(k.startswith("ks_") for k in flagged("more_diplodus"))
    assert b["darker"]["drift"] is True and flagged("darker") == {"ks_brightness"}
    assert rep["overall"]["drifted_batches"] == ["darker", "more_diplodus"]
    table = drift.batch_rows(rep)
    assert set(table["test"]) == expected and len(table) == 5 * len(expected)


def test_false_alarm_rate_of_the_count_tests_stays_below_alpha():
    rng = np.random.default_rng(7)
    ref = _reference(rng)
    preds = _campaign({f"b{i:02d}": _images(rng, 60) for i in range(20)})
    rep = drift.detect(preds, ref, {**CFG, "detectors": ["label_shift"]})
    flagged = rep["overall"]["drifted_batches"]
    assert len(flagged) <= 3, flagged  # 20 batches at alpha 0.05: 1 expected, > 3 has p < 2 %


def test_detection_reference_round_trip_and_summary(tmp_path):
    ref = _reference(np.random.default_rng(0), n=50)
    meta = drift.save_reference(ref, tmp_path / "ref.npz", tmp_path / "ref.json")
    back = drift.load_reference(tmp_path / "ref.npz")
    np.testing.assert_array_equal(back["counts"], ref["counts"])
    assert meta["images"] == 50 and "pca_components" not in meta
    assert meta["detections_per_class"] == dict(zip(CLASSES, ref["counts"].sum(0).tolist(), strict=True))
    assert json.loads((tmp_path / "ref.json").read_text())["training_class_distribution"] == {
        "sparus": 120,
        "diplodus": 60,
    }


def test_drift_step_reads_a_detection_counts_table(tmp_path):
    rng = np.random.default_rng(3)
    ref = _reference(rng)
    drift.save_reference(ref, tmp_path / "ref.npz", tmp_path / "ref.json")
    preds = _campaign({"same": _images(rng, 40), "darker": _images(rng, 40, brightness=60.0)})
    preds.to_parquet(tmp_path / "counts.parquet")
    out = {k: tmp_path / f"drift.{k}" for k in ("json", "table", "plot")}
    rep = drift.run(
        predictions=tmp_path / "counts.parquet", reference=tmp_path / "ref.npz", out=out, cfg=CFG, title="t"
    )
    assert rep["overall"]["drifted_batches"] == ["darker"]
    assert out["plot"].stat().st_size > 0 and imaging.load(out["plot"]).width > 0
    with pytest.raises(drift.DriftDetected, match="darker"):
        drift.check(out["json"], "fail", tmp_path / "policy.json")
    drift.check(out["json"], "warn", tmp_path / "policy.json")
    assert json.loads((tmp_path / "policy.json").read_text())["drifted_batches"] == ["darker"]


@pytest.mark.parametrize("task", ["detect", "segment", "obb"])
def test_inference_run_of_a_detection_campaign(tmp_path, monkeypatch, task):
    monkeypatch.chdir(tmp_path)  # the workflow's folder
    """track_inference's library call for a detection summary, into a real SQLite MLflow store."""
    card = {"id": "a" * 64, "arch": "yolo11n.yaml", "task": task, "classes": CLASSES}
    summary = {
        "seen": 12,
        "predicted": 10,
        "rejected": 2,
        "rejected_by_reason": {"truncated": 1, "zero_bytes": 1},
        "per_class": {"sparus": 30, "diplodus": 7},
        "shards": {"1-of-2": {"seconds": 1.5}, "2-of-2": {"seconds": 2.5}},
    }
    rep = {"overall": {"tested_batches": 2, "drifted_batches": ["b"], "drift": True, "tests": {}}}
    info = tracking.log_inference(
        usecase="fish",
        campaign="2026",
        card=card,
        summary=summary,
        drift=rep,
        mlflow_cfg={"tracking_uri": None, "results": str(tmp_path), "experiment": "aquaflow"},
        out=tmp_path / "mlflow_run.json",
    )
    assert str(tmp_path) not in (tmp_path / "mlflow_run.json").read_text()  # no local path published
    run = MlflowClient(tracking.store_uri(info["tracking_uri"])).get_run(info["run_id"])
    m = run.data.metrics
    assert (m["images_seen"], m["images_predicted"], m["images_rejected"]) == (12, 10, 2)
    assert m["detections"] == 37 and m["detections.sparus"] == 30 and m["detections.diplodus"] == 7
    assert m["rejected.truncated"] == 1 and m["images_per_second"] == pytest.approx(12 / 4.0)
    assert m["drift.batches_drifted"] == 1 and not any(k.startswith("predicted.") for k in m)
    assert run.data.params["model.task"] == task and run.data.params["model.id"] == card["id"]
    assert run.data.tags["step"] == "inference" and run.data.tags["drifted_batches"] == "b"
