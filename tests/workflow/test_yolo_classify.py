"""Ultralytics classification use cases through the real workflow: a `.pt` trained elsewhere
predicts campaigns with Ultralytics' own labels and probabilities; `source: train` trains with
Ultralytics' trainer and is evaluated; a checkpoint of another task stops the import naming both."""

from __future__ import annotations

import json
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from aquaflow.io import sha256_file
from aquaflow.monitoring import tracking

from ..conftest import REPO, run_snakemake, tiny_usecase, write_workdir
from ..wf_a_models import IMGSZ, odd_images, tiny_cls_pt, ultralytics_probs  # noqa: F401  (fixture)


@pytest.fixture(scope="module")
def run(tmp_path_factory, planktonclas_resources, tiny_cls_pt):  # noqa: F811
    """One workflow run (--keep-going) with four use cases: `given` (the bare .pt trained by
    Ultralytics alone, one campaign of crops and odd shapes, no dataset), `trained` (the FlowCam
    demo data, Ultralytics' trainer for 2 epochs starting from the given checkpoint, the demo
    campaign with a DwC-A, embeddings and drift), and two whose import must fail: `wrong` (a
    detection checkpoint for a classify use case) and `fish` (the classifier for a detect use case)."""
    given_pt = tiny_cls_pt
    work = tmp_path_factory.mktemp("yolo_cls_wf")
    crops = sorted((planktonclas_resources / "demo-images").rglob("*.jpg"))[::9]
    images = work / "campaign_images"
    images.mkdir()
    for p in crops:
        shutil.copyfile(p, images / f"{p.parent.name}_{p.name}")
    odd_images(crops, images)
    (images / "broken.jpg").write_bytes(b"not an image")
    given = {
        "task": "classify",
        "instrument": "FlowCam",
        "model": {"source": "path", "path": str(given_pt), "backend": "ultralytics"},
        "inference": {"device": "cpu", "batch_size": 8},
        "campaigns": {"c1": {"inputs": [{"kind": "folder", "path": str(images)}]}},
    }
    trained = tiny_usecase()
    trained["model"] = {
        "backend": "ultralytics",
        "arch": "yolo11n-cls.yaml",
        "input_size": IMGSZ,
        "pretrained": {"kind": "path", "path": str(given_pt), "sha256": sha256_file(given_pt)},
    }
    trained["training"].update(
        {"epochs": 2, "batch_size": 16, "warmup_epochs": 0, "lr": 0.01, "device": "cpu"}
    )
    trained["inference"] = {"device": "cpu", "embeddings": True}
    trained["drift"] = {"enabled": True, "on_drift": "warn", "batch": {"by": "folder", "min_size": 5}}
    trained["cv"] = {"folds": 3, "group": None, "seed": 0}
    trained["campaigns"]["demo"]["samples"] = {"path": str(REPO / "config/samples/flowcam_demo.csv")}
    trained["export"]["dwca"]["taxonomy"] = str(REPO / "config/taxonomy/flowcam.tsv")
    from ultralytics import YOLO

    det = work / "det" / "model.pt"
    det.parent.mkdir()
    YOLO("yolo11n.yaml", task="detect").save(str(det))
    wrong = {"task": "classify", "model": {"source": "path", "path": str(det), "backend": "ultralytics"}}
    fish = {"task": "detect", "model": {"source": "path", "path": str(given_pt)}}
    write_workdir(work, {"given": given, "trained": trained, "wrong": wrong, "fish": fish})
    proc = run_snakemake(work, "all", "cv", "--set-scatter", "infer=1", "--keep-going", check=False)
    log = proc.stdout + proc.stderr
    # the imports meant to fail are the run's only failures (--keep-going ran all the rest)
    failed = set(re.findall(r"Error in rule (\w+):", log))
    assert proc.returncode != 0 and failed == {"import_ultralytics_model"}, log[-6000:]
    return {"res": work / "results", "images": images, "given_pt": given_pt, "work": work, "det": det}


def test_given_pt_predicts_campaigns_as_ultralytics_does(run):
    res = run["res"] / "given"
    card = json.loads((res / "model/model_card.json").read_text())
    assert card["id"] == sha256_file(run["given_pt"]) == sha256_file(res / "model/model.pt")
    assert card["task"] == "classify" and card["backend"] == "ultralytics" and card["input_size"] == IMGSZ
    c1 = res / "campaigns/c1"
    pred = pd.read_parquet(c1 / "predictions.parquet").sort_values("seq")
    rejected = pd.read_parquet(c1 / "rejected.parquet")
    summary = json.loads((c1 / "summary.json").read_text())
    n = len(list(run["images"].iterdir()))
    assert summary["predicted"] == len(pred) == n - 1 and summary["rejected"] == 1
    assert rejected["source"].str.endswith("broken.jpg").all()
    theirs = ultralytics_probs(run["given_pt"], [Path(s) for s in pred["source"]])
    classes = np.array(card["classes"])
    assert (pred["top1_label"].to_numpy() == classes[theirs.argmax(1)]).all()
    assert np.abs(pred["top1_prob"].to_numpy() - theirs.max(1)).max() <= 1e-5
    assert (pred["model_id"] == card["id"]).all()
    ecotaxa = pd.read_csv(c1 / "export/ecotaxa_given_c1.tsv", sep="\t", skiprows=[1])
    assert len(ecotaxa) == len(pred)
    crate = zipfile.ZipFile(c1 / "export/rocrate_given_c1.zip")
    assert "ro-crate-metadata.json" in crate.namelist()


def test_source_train_writes_model_eval_and_campaign_exports(run):
    res = run["res"] / "trained"
    card = json.loads((res / "model/model_card.json").read_text())
    assert card["arch"] == "yolo11n-cls.yaml" and card["resize"] == "center_crop"
    assert card["id"] == sha256_file(res / "model/model.pt")
    assert sorted(card["classes"]) == card["classes"] and len(card["classes"]) == 6
    assert card["training"]["epochs_run"] == 2 and card["training"]["ultralytics_args"]["amp"] is False
    assert card["training"]["images"]["train"] > 0 and card["pretrained"]["file"] == run["given_pt"].name
    assert "augmentation rot90" in card["training"]["not_applied"]
    history = pd.read_csv(res / "model/history.tsv", sep="\t")
    assert len(history) == 2 and (res / "model/training_curve.png").stat().st_size > 0
    metrics = json.loads((res / "eval/metrics.json").read_text())
    assert metrics["model_id"] == card["id"] and 0.0 <= metrics["accuracy"] <= 1.0
    low, high = metrics["intervals"]["macro_f1"]  # the same bootstrap intervals as every backend
    assert low <= metrics["macro_f1"] <= high
    manifest = pd.read_parquet(res / "prepared/manifest.parquet")
    assert metrics["n"] == int((manifest["split"] == "test").sum())
    demo = res / "campaigns/demo"
    summary = json.loads((demo / "summary.json").read_text())
    assert summary["predicted"] == len(manifest) and summary["rejected"] == 0
    assert (demo / "export/dwca_trained_demo.zip").stat().st_size > 0
    assert (demo / "export/ecotaxa_trained_demo.tsv").exists()


def test_a_checkpoint_of_another_task_stops_the_import(run):
    work, det = run["work"], run["det"]
    logs = (work / "results/wrong/logs/import_ultralytics_model.log").read_text()
    assert f"{det} is an Ultralytics 'detect' model but the use case's task is 'classify'" in logs
    logs = (work / "results/fish/logs/import_ultralytics_model.log").read_text()
    assert "is an Ultralytics 'classify' model but the use case's task is 'detect'" in logs
    assert not (work / "results/wrong/model/model.pt").exists()
    assert not (work / "results/fish/model/model.pt").exists()


def test_training_run_registry_inference_run_and_drift(run):
    """The engine's capabilities reach this backend: MLflow training run and registry version,
    the campaign's inference run, a drift reference from the model's embeddings and a drift test."""
    from mlflow.tracking import MlflowClient

    res = run["res"] / "trained"
    card = json.loads((res / "model/model_card.json").read_text())
    client = MlflowClient(tracking.store_uri(card["mlflow"]["tracking_uri"], run["res"].parent))
    training = client.get_run(card["mlflow"]["run_id"])
    assert training.data.tags["backend"] == "ultralytics" and training.data.tags["model_id"] == card["id"]
    assert training.data.params["model.arch"] == "yolo11n-cls.yaml"
    top1 = client.get_metric_history(training.info.run_id, "metrics/accuracy_top1")
    assert [m.step for m in top1] == [1, 2]
    artifacts = {a.path for a in client.list_artifacts(training.info.run_id, "model")}
    assert artifacts == {"model/model.pt", "model/model_card.json"}
    (version,) = client.search_model_versions("name='aquaflow_trained'")
    assert str(version.version) == "1" and version.run_id == training.info.run_id
    demo = res / "campaigns/demo"
    info = json.loads((demo / "mlflow_run.json").read_text())
    inference = client.get_run(info["run_id"])
    summary = json.loads((demo / "summary.json").read_text())
    assert inference.data.metrics["images_predicted"] == summary["predicted"] == 105
    assert info["model_version"] == "1"
    reference = json.loads((res / "model/drift_reference.json").read_text())
    assert reference["model_id"] == card["id"] and reference["embedding_dim"] == 1280
    drift = json.loads((demo / "drift/drift.json").read_text())
    assert sum(b["n"] for b in drift["batches"]) == 105  # one batch per class folder of the demo
    tested = [b for b in drift["batches"] if b["drift"] is not None] + [drift["overall"]]
    assert len(tested) >= 2 and drift["unavailable"] == {}
    assert all(0 < b["tests"]["mmd"]["p_value"] <= 1 for b in tested)


def test_cross_validation_trains_the_ultralytics_recipe_per_fold(run):
    """`snakemake cv` for an Ultralytics classification use case: Ultralytics' trainer per fold."""
    from tests.cv_checks import check_cv

    check_cv(run["res"] / "trained", k=3, weights="model.pt", arch="yolo11n-cls.yaml")
