"""Campaign capabilities of detection-type tasks in the real workflow: drift monitoring and the MLflow
inference run, for detect, segment and obb, with a given model (an untrained YOLO11n the test builds,
low conf: the plumbing is under test, not the model).

One Snakemake run, one use case per task: labelled synthetic scenes (the drift reference is the
detector run on their training images), a campaign of two folders — new scenes from the same
generator (in distribution) and the same scenes darkened and blurred (another camera) — drift
batches by folder, on_drift: warn. Then on_drift: fail stops the workflow naming the batch and
reruns nothing but the policy.
"""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from aquaflow.monitoring import tracking
from aquaflow.synthetic import scenes
from tests.given_yolo import write_models

from ..conftest import run_snakemake, write_workdir

pytestmark = pytest.mark.workflow

KIND = {"detect": "fish", "segment": "coral", "obb": "diatoms"}
N_REF, N_BATCH = 24, 12
SCATTER = ("--set-scatter", "infer=1")  # one shard per campaign, in every run of the module
TARGETS = [
    f"results/{t}/campaigns/survey/{f}" for t in KIND for f in ("drift/policy.json", "mlflow_run.json")
]


def _campaign_folders(work, kind: str) -> None:
    """incoming/same: new PNG scenes like the training ones; incoming/shifted: those, darker and blurred."""
    new = scenes.write_dataset(kind, work / "new" / kind, N_BATCH, 0, (96, 96), seed=11).parent
    (work / "incoming" / kind / "same").mkdir(parents=True)
    (work / "incoming" / kind / "shifted").mkdir(parents=True)
    for p in sorted((new / "images/train").glob("*.png")):
        shutil.copy(p, work / "incoming" / kind / "same" / p.name)
        img = cv2.imread(str(p))
        cv2.imwrite(
            str(work / "incoming" / kind / "shifted" / p.name),
            (cv2.GaussianBlur(img, (0, 0), 2) * 0.5).astype(np.uint8),
        )


def _usecase(task: str, data, model, incoming, on_drift: str) -> dict:
    return {
        "task": task,
        "description": f"{task} campaign capabilities",
        "source": {"kind": "path", "path": str(data)},
        "detection": {
            "imgsz": 64,
            "predict": {"conf": 0.001, "max_det": 10, "batch": 16, "device": "cpu"},
            "overlays": 1,
        },
        "model": {"source": "path", "path": str(model)},
        "drift": {"enabled": True, "on_drift": on_drift, "batch": {"by": "folder", "min_size": 10}},
        "campaigns": {"survey": {"inputs": [{"kind": "folder", "path": str(incoming)}]}},
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("detect_tracking")
    write_models(work / "models", {t: list(scenes.KINDS[k][1]) for t, k in KIND.items()})
    ucs = {}
    for task, kind in KIND.items():
        data = scenes.write_dataset(kind, work / "data" / kind, N_REF, 8, (96, 96), seed=3).parent
        _campaign_folders(work, kind)
        ucs[task] = _usecase(task, data, work / "models" / task, work / "incoming" / kind, "warn")
    write_workdir(work / "wd", ucs)
    proc = run_snakemake(work / "wd", *TARGETS, *SCATTER)
    return work / "wd", proc


@pytest.mark.parametrize("task", list(KIND))
def test_drift_flags_only_the_shifted_folder(run, task):
    wd, _ = run
    res = wd / "results" / task
    rep = json.loads((res / "campaigns/survey/drift/drift.json").read_text())
    batches = {b["batch"]: b for b in rep["batches"]}
    assert {k: b["n"] for k, b in batches.items()} == {"same": N_BATCH, "shifted": N_BATCH}
    assert batches["same"]["drift"] is False, batches["same"]["tests"]
    assert batches["shifted"]["drift"] is True
    fired = {k for k, t in batches["shifted"]["tests"].items() if t["drift"]}
    assert fired & {"ks_brightness", "ks_contrast", "ks_sharpness"}, fired
    classes = list(scenes.KINDS[KIND[task]][1])
    assert {f"count_{c}" for c in ["total", *classes]} <= set(batches["same"]["tests"])
    assert "mmd" in rep["unavailable"] and rep["overall"]["drifted_batches"] == ["shifted"]
    assert json.loads((res / "campaigns/survey/drift/policy.json").read_text()) == {
        "drifted_batches": ["shifted"],
        "policy": "warn",
    }
    ref = json.loads((res / "model/drift_reference.json").read_text())
    card = json.loads((res / "model/model_card.json").read_text())
    assert ref["images"] == N_REF and ref["model_id"] == card["id"]
    assert set(ref["detections_per_class"]) == set(classes)
    assert ref["training_class_distribution"] and set(ref["training_class_distribution"]) <= set(classes)


@pytest.mark.parametrize("task", list(KIND))
def test_inference_run_of_the_campaign(run, task):
    wd, _ = run
    res = wd / "results" / task
    info = json.loads((res / "campaigns/survey/mlflow_run.json").read_text())
    assert info["tracking_uri"] == "sqlite:///results/mlflow/mlflow.db"  # relative: no local path
    run_ = MlflowClient(tracking.store_uri(info["tracking_uri"], wd)).get_run(info["run_id"])
    card = json.loads((res / "model/model_card.json").read_text())
    summary = json.loads((res / "campaigns/survey/summary.json").read_text())
    assert run_.data.tags["step"] == "inference" and run_.data.tags["campaign"] == "survey"
    assert run_.data.tags["usecase"] == task and run_.data.tags["model_id"] == card["id"]
    assert run_.data.params["model.task"] == task and run_.data.params["model.id"] == card["id"]
    m = run_.data.metrics
    assert (m["images_seen"], m["images_predicted"], m["images_rejected"]) == (2 * N_BATCH, 2 * N_BATCH, 0)
    assert m["detections"] == sum(summary["per_class"].values()) > 0
    for c, n in summary["per_class"].items():
        assert m[f"detections.{c}"] == n
    assert m["images_per_second"] > 0 and len(summary["shards"]) == 1
    assert m["drift.batches_tested"] == 2 and m["drift.batches_drifted"] == 1
    assert run_.data.tags["drifted_batches"] == "shifted"


def test_fail_policy_stops_the_workflow_naming_the_batch(run):
    wd, _ = run
    path = wd / "config/usecases/obb.yaml"
    uc = yaml.safe_load(path.read_text())
    uc["drift"]["on_drift"] = "fail"
    path.write_text(yaml.safe_dump(uc, sort_keys=False))
    proc = run_snakemake(wd, *TARGETS, *SCATTER, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "drift detected in 1 batch(es)" in out and "shifted" in out and "on_drift: fail" in out
    assert not (wd / "results/obb/campaigns/survey/drift/policy.json").exists()
    for rule in ("detect_shard", "drift_reference_detect", "drift:", "track_inference"):
        assert f"rule {rule}" not in out, rule  # only the policy reran
