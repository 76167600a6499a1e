"""MLflow tracking: jobs that start at the same moment on one SQLite store, the model registry."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from mlflow.tracking import MlflowClient

from aquaflow.config import validate
from aquaflow.io import sha256_file, write_json
from aquaflow.monitoring import tracking
from aquaflow.synthetic import plankton

from ..conftest import REPO, tiny_usecase

SCRIPTS = str(REPO / "scripts")

START_RUN = """
import sys, time
sys.path.insert(0, {scripts!r})
import mlflow
from aquaflow.monitoring import tracking
time.sleep(max(0.0, {start} - time.time()))
with tracking.run({uri!r}, "race", run_name="job{i}"):
    mlflow.log_metric("x", {i})
"""

LOG_INFERENCE = """
import sys, time
sys.path.insert(0, {scripts!r})
from aquaflow.monitoring import tracking
card = {{"id": "m{i}", "arch": "tiny", "mlflow": {{"run_id": "from-another-store"}}}}
summary = {{"seen": 3, "predicted": 2, "rejected": 1, "shards": {{"0": {{"seconds": 1.5}}}}}}
cfg = {{"tracking_uri": {uri!r}, "experiment": "race", "results": "."}}
time.sleep(max(0.0, {start} - time.time()))
tracking.log_inference(usecase="uc{i}", campaign="c", card=card, summary=summary, drift=None,
                       mlflow_cfg=cfg, out={out!r})
"""

TRAIN = """
import json, sys, time
sys.path.insert(0, {scripts!r})
from aquaflow.backends import torch_train as train
kw = json.loads(open({args!r}).read())
time.sleep(max(0.0, {start} - time.time()))
card = train.run(**kw)
print(json.dumps(card["mlflow"]))
"""


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_concurrent_jobs_on_a_fresh_sqlite_store(tmp_path):
    """Before the lock, 3 of 4 such jobs died (2026-11-27) (alembic migration / duplicate column races)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 6  # every process imported and waiting when the clock strikes
    procs = [_spawn(START_RUN.format(scripts=SCRIPTS, start=start, uri=uri, i=i)) for i in range(3)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), [err[-1500:] for rc, err in results if rc]
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("race")
    runs = client.search_runs([exp.experiment_id])
    assert sorted(r.data.metrics["x"] for r in runs) == [0, 1, 2]


def test_concurrent_inference_logs_on_a_fresh_sqlite_store(tmp_path):
    """Two use cases' track_inference jobs at once on a fresh store: the registry lookup opened the
    database outside the lock and raced the other job's migration (CI 2026-11-27:
    `table _alembic_tmp_experiments already exists`)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    start = time.time() + 6
    outs = [tmp_path / f"run{i}.json" for i in range(3)]
    procs = [
        _spawn(LOG_INFERENCE.format(scripts=SCRIPTS, start=start, uri=uri, i=i, out=str(out)))
        for i, out in enumerate(outs)
    ]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in results), [err[-1500:] for rc, err in results if rc]
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("race").experiment_id])
    assert sorted(r.data.tags["usecase"] for r in runs) == ["uc0", "uc1", "uc2"]
    assert all(r.data.metrics["images_rejected"] == 1 for r in runs)
    assert {json.loads(o.read_text())["run_id"] for o in outs} == {r.info.run_id for r in runs}


def _train_args(work: Path, name: str, uri: str) -> dict:
    images = plankton.write_images(work / "images", 30, seed=len(name))
    manifest = pd.DataFrame(
        {
            "id": [p.stem for p, _ in images],
            "path": [p.name for p, _ in images],
            "label": [c for _, c in images],
            "split": ["train"] * 24 + ["val"] * 6,
        }
    )
    manifest.to_parquet(work / "manifest.parquet")
    write_json({"classes": list(plankton.CLASSES)}, work / "classes.json")
    uc = tiny_usecase()
    uc["training"].update(epochs=1, augmentation=[])
    uc["model"].update(input_size=32)
    uc = validate(uc, REPO / "workflow/schemas/usecase.schema.yaml", "test")
    model = {k: v for k, v in uc["model"].items() if k not in ("source", "path", "package", "subdir", "uri")}
    return {
        "name": name,
        "settings": {"images": ".", "model": model, "training": uc["training"], "data": {"kind": "test"}},
        "raw": str(work / "images"),
        "manifest_path": str(work / "manifest.parquet"),
        "classes_path": str(work / "classes.json"),
        "out": {
            k: str(work / "model" / f)
            for k, f in [
                ("weights", "model.safetensors"),
                ("card", "model_card.json"),
                ("history", "history.tsv"),
                ("curve", "curve.png"),
            ]
        },
        "mlflow_cfg": {
            "tracking_uri": uri,
            "experiment": "aquaflow",
            "results": str(work),
            "registered_model": "aquaflow_{uc}",
        },
    }


def test_two_concurrent_trainings_on_one_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    start = time.time() + 8
    procs = []
    for name in ("lake", "sea"):
        (tmp_path / name).mkdir()
        args = tmp_path / name / "args.json"
        args.write_text(json.dumps(_train_args(tmp_path / name, name, uri)))
        procs.append(_spawn(TRAIN.format(scripts=SCRIPTS, args=str(args), start=start)))
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _, _ in results), [err[-2000:] for rc, _, err in results if rc]
    client = MlflowClient(uri, registry_uri=uri)
    exp = client.get_experiment_by_name("aquaflow")
    runs = {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"lake-train", "sea-train"}
    for name in ("lake", "sea"):
        run = runs[f"{name}-train"]
        assert run.info.status == "FINISHED" and "val_macro_f1" in run.data.metrics
        (mv,) = client.search_model_versions(f"name = 'aquaflow_{name}'")
        assert mv.run_id == run.info.run_id and mv.source == f"runs:/{run.info.run_id}/model"
        card = json.loads((tmp_path / name / "model/model_card.json").read_text())
        assert mv.tags["model_id"] == card["id"]
        files = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
        assert files == {"model/model_card.json", "model/model.safetensors"}


def test_register_and_download_by_version_and_alias(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # mlflow.set_tracking_uri/set_registry_uri export these variables: undo that after the test
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    model = tmp_path / "m"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    card = {"id": sha256_file(model / "model.safetensors"), "arch": "lcnet_050", "classes": ["a", "b"]}
    write_json(card, model / "model_card.json")
    versions = []
    for _ in range(2):
        with tracking.run(uri, "reg"):
            versions.append(
                tracking.register_model("m", model / "model.safetensors", card, model / "model_card.json")
            )
    assert [str(v.version) for v in versions] == ["1", "2"]
    client = MlflowClient(uri, registry_uri=uri)
    client.set_registered_model_alias("m", "champion", "1")
    for ref in ("models:/m/2", "models:/m@champion"):
        got = tracking.download_registered_model(ref, tmp_path / ref.replace("/", "_").replace(":", ""), uri)
        assert sha256_file(got / "model.safetensors") == card["id"]
        assert json.loads((got / "model_card.json").read_text()) == card
    info = tracking.model_version_of({"id": card["id"], "imported_from": {"uri": "models:/m@champion"}}, uri)
    assert info == {"model_uri": "models:/m@champion", "registered_model": "m", "model_version": "1"}


def test_registration_can_be_switched_off():
    assert tracking.registered_name(None, "lake") is None
    assert tracking.registered_name("lab_{uc}_classifier", "lake") == "lab_lake_classifier"


def test_logging_to_one_store_does_not_redirect_the_next(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; aquaflow must not, or the next use case's
    configured store in the same process would be overridden by the first one's."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first = f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}"
    (tmp_path / "a").mkdir()
    tracking.ensure_experiment(first, "x")
    assert "MLFLOW_TRACKING_URI" not in os.environ
    second = f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}"
    assert tracking.tracking_uri(second, tmp_path) == second
    monkeypatch.setenv("MLFLOW_TRACKING_URI", first)  # a user's own setting still wins
    tracking.ensure_experiment(second, "x")
    assert tracking.tracking_uri(second, tmp_path) == first
