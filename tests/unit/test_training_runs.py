"""The one MLflow training run every trainer ends in (tracking.log_training), for each backend's card.

Each backend's card and history (the columns its trainer writes: torch and Keras per-epoch rows,
Ultralytics' results.csv) go through the same function; the run, its metrics per epoch, the model
folder and the registry version are read back through the MLflow client, and the registered
folder is imported again as a given model.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from aquaflow.io import public_uri, read_json, sha256_file, write_json
from aquaflow.models import artifacts
from aquaflow.monitoring import tracking

from ..conftest import REPO

CLASSES = ["copepod", "diatom"]

# per backend: weights file, card file name, the card keys its trainer writes, its history columns
BACKENDS = {
    "torch": (
        "model.safetensors",
        "card.json",  # a card under another name still lands as model/model_card.json
        {
            "format": "safetensors",
            "backend": "torch",
            "task": "classify",
            "arch": "lcnet_050",
            "input_size": 64,
            "normalization": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
            "metrics": {"val_macro_f1": 0.5, "val_accuracy": 0.5},
        },
        {
            "epoch": [1, 2],
            "train_loss": [0.9, 0.7],
            "train_acc": [0.5, 0.6],
            "val_loss": [0.8, 0.75],
            "val_acc": [0.5, 0.55],
            "val_macro_f1": [0.4, 0.5],
            "lr": [1e-3, 5e-4],
            "frozen": [1, 0],
            "seconds": [3.0, 2.5],
        },
    ),
    "keras": (
        "model.keras",
        "model_card.json",
        {
            "format": "keras",
            "backend": "keras",
            "task": "classify",
            "arch": "MobileNetV3Small",
            "input_size": 64,
            "resize": "letterbox",
            "normalization": {"preprocess": "keras_applications", "module": "mobilenet_v3"},
        },
        {
            "epoch": [1, 2],
            "train_loss": [1.1, 0.9],
            "train_acc": [0.4, 0.5],
            "val_loss": [1.0, 0.95],
            "val_acc": [0.45, 0.5],
            "val_macro_f1": [0.3, 0.45],
            "lr": [1e-3, 1e-3],
            "seconds": [4.0, 3.5],
        },
    ),
    "ultralytics": (
        "model.pt",
        "model_card.json",
        {
            "format": "ultralytics",
            "backend": "ultralytics",
            "task": "detect",
            "arch": "yolo11n.yaml",
            "input_size": 96,
            "normalization": {"preprocess": "Ultralytics letterbox to input_size, RGB / 255"},
        },
        {  # Ultralytics' results.csv: metric names with brackets, no validation (NaN) before the last epoch
            "epoch": [1, 2],
            "time": [5.0, 9.0],
            "train/box_loss": [3.2, 2.9],
            "train/cls_loss": [4.1, 3.8],
            "metrics/mAP50(B)": [np.nan, 0.12],
            "metrics/mAP50-95(B)": [np.nan, 0.05],
            "lr/pg0": [0.003, 0.002],
            "epoch_seconds": [5.0, 4.0],
        },
    ),
}


def model_folder(tmp: Path, backend: str) -> tuple[Path, Path, dict, pd.DataFrame]:
    """A trained-model folder as the backend's trainer leaves it (weights + card), and its history."""
    weights_name, card_name, keys, history = BACKENDS[backend]
    folder = tmp / backend
    folder.mkdir(parents=True)
    weights = folder / weights_name
    weights.write_bytes(f"{backend} weights".encode() * 100)
    card = {"id": sha256_file(weights), "weights": weights_name, "classes": CLASSES, **keys}
    card["training"] = {"config": {"epochs": 2, "seed": 0}, "epochs_run": 2}
    artifacts.validate_card(dict(card), backend)  # the card is one the workflow can load
    write_json(card, folder / card_name)
    return weights, folder / card_name, card, pd.DataFrame(history)


def mlflow_cfg(tmp: Path, registered: str | None = "aquaflow_{uc}") -> dict:
    uri = f"sqlite:///{tmp / 'store' / 'mlflow.db'}"
    return {
        "tracking_uri": uri,
        "experiment": "aquaflow",
        "results": str(tmp),
        "registered_model": registered,
    }


def log(tmp: Path, backend: str, cfg: dict, usecase: str = "lake", started: float | None = None) -> tuple:
    weights, card_path, card, history = model_folder(tmp, backend)
    curve = tmp / f"{backend}_curve.png"
    curve.write_bytes(b"\x89PNG not really")
    logged = tracking.log_training(
        usecase=usecase,
        card=card,
        card_path=card_path,
        weights=weights,
        params={"model": {"arch": card["arch"]}, "training": {"epochs": 2, "lr": 0.001}, "classes": 2},
        history=history,
        mlflow_cfg=cfg,
        metrics={"best_epoch": 2, "best_val": float("nan")},
        artifacts=[curve],
        started=started,
    )
    return logged, card_path, history


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_training_run_and_registry_version_for_each_backend(tmp_path, monkeypatch, backend):
    monkeypatch.chdir(tmp_path)  # the workflow's folder
    cfg = mlflow_cfg(tmp_path)
    started = time.time() - 120  # training began two minutes ago
    card, card_path, history = log(tmp_path, backend, cfg, started=started)
    weights_name = BACKENDS[backend][0]

    # the card on disk holds the run's ids (and is what the function returned)
    assert read_json(card_path) == card
    # a local store is published relative to the working directory, never as an absolute path
    assert card["usecase"] == "lake" and card["mlflow"]["tracking_uri"] == "sqlite:///store/mlflow.db"
    assert public_uri(cfg["tracking_uri"]) == card["mlflow"]["tracking_uri"]
    assert str(tmp_path) not in card_path.read_text()
    assert tracking.store_uri(card["mlflow"]["tracking_uri"]) == cfg["tracking_uri"]
    client = MlflowClient(cfg["tracking_uri"], registry_uri=cfg["tracking_uri"])
    run = client.get_run(card["mlflow"]["run_id"])
    assert run.info.run_name == "lake-train" and run.info.status == "FINISHED"
    assert run.info.start_time == int(started * 1000)  # the run lasts as long as the training
    tags = run.data.tags
    assert (tags["usecase"], tags["step"], tags["model_id"]) == ("lake", "train", card["id"])
    assert (tags["backend"], tags["task"]) == (card["backend"], card["task"])
    assert run.data.params["model.arch"] == card["arch"] and run.data.params["training.epochs"] == "2"

    # every history column is a metric per epoch; MLflow-illegal characters dropped, NaN skipped
    for column in history.columns.drop("epoch"):
        key = column.replace("(", "").replace(")", "")
        got = client.get_metric_history(run.info.run_id, key)
        expected = [
            (int(e), float(v))
            for e, v in zip(history["epoch"], history[column], strict=True)
            if np.isfinite(v)
        ]
        assert sorted((m.step, m.value) for m in got) == expected, column
    assert run.data.metrics["best_epoch"] == 2 and "best_val" not in run.data.metrics
    if backend == "ultralytics":
        assert run.data.metrics["metrics/mAP50B"] == pytest.approx(0.12)

    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert top == {card_path.name, f"{backend}_curve.png", "model"}
    folder = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert folder == {"model/model_card.json", f"model/{weights_name}"}

    mv = client.get_model_version("aquaflow_lake", "1")
    assert mv.run_id == run.info.run_id and mv.source == f"runs:/{run.info.run_id}/model"
    assert mv.tags["model_id"] == card["id"] and mv.tags["backend"] == card["backend"]
    assert run.data.tags["registered_version"] == "1"

    # the registered folder is a given model the workflow imports (model.source: mlflow)
    out = tmp_path / "imported"
    imported = artifacts.import_model(
        {"source": "mlflow", "uri": "models:/aquaflow_lake/1"},
        out / weights_name,
        out / "model_card.json",
        cfg,
    )
    assert imported["id"] == card["id"] == sha256_file(out / weights_name)
    assert (
        imported["mlflow"] == card["mlflow"] and imported["imported_from"]["uri"] == "models:/aquaflow_lake/1"
    )


def test_a_second_training_is_the_next_version_and_registration_can_be_off(tmp_path):
    cfg = mlflow_cfg(tmp_path)
    first, _, _ = log(tmp_path / "a", "ultralytics", cfg)
    second, _, _ = log(tmp_path / "b", "torch", cfg)
    client = MlflowClient(cfg["tracking_uri"], registry_uri=cfg["tracking_uri"])
    versions = {str(mv.version): mv.run_id for mv in client.search_model_versions("name = 'aquaflow_lake'")}
    assert versions == {"1": first["mlflow"]["run_id"], "2": second["mlflow"]["run_id"]}

    off, _, _ = log(tmp_path / "c", "keras", cfg | {"registered_model": None}, usecase="sea")
    assert client.search_model_versions(f"run_id = '{off['mlflow']['run_id']}'") == []
    folder = {a.path for a in client.list_artifacts(off["mlflow"]["run_id"], "model")}
    assert folder == {"model/model_card.json", "model/model.keras"}  # the folder is kept all the same


LOG = """
import json, sys, time
sys.path.insert(0, {scripts!r})
sys.path.insert(0, {repo!r})
from tests.unit.test_training_runs import log, mlflow_cfg
from pathlib import Path
time.sleep(max(0.0, {start} - time.time()))
card, _, _ = log(Path({work!r}), {backend!r}, mlflow_cfg(Path({store!r})))
print(json.dumps(card["mlflow"]))
"""


def test_two_trainers_finishing_at_once_on_a_fresh_store(tmp_path):
    """An Ultralytics and a Keras training end at the same moment, same registered name, fresh
    SQLite store: both runs finish and the registry holds versions 1 and 2, one per run."""
    start = time.time() + 8
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                LOG.format(
                    scripts=str(REPO / "scripts"),
                    repo=str(REPO),
                    start=start,
                    work=str(tmp_path / backend),
                    backend=backend,
                    store=str(tmp_path),
                ),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for backend in ("ultralytics", "keras")
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-3000:] for _, err in outs]
    runs = {json.loads(out.strip().splitlines()[-1])["run_id"] for out, _ in outs}
    uri = mlflow_cfg(tmp_path)["tracking_uri"]
    client = MlflowClient(uri, registry_uri=uri)
    versions = client.search_model_versions("name = 'aquaflow_lake'")
    assert sorted(str(mv.version) for mv in versions) == ["1", "2"]
    assert {mv.run_id for mv in versions} == runs
    assert all(client.get_run(r).info.status == "FINISHED" for r in runs)


def test_evaluation_joins_the_training_run_unless_the_model_was_given(tmp_path):
    cfg = mlflow_cfg(tmp_path)
    card, _, _ = log(tmp_path, "ultralytics", cfg)
    report = tmp_path / "per_class.tsv"
    report.write_text("class\tAP50\nsparus\t0.5\n")
    client = MlflowClient(cfg["tracking_uri"], registry_uri=cfg["tracking_uri"])

    run_id = tracking.log_evaluation(
        card, {"val_mAP50": 0.5, "val_n": 4, "val_x": float("nan")}, "eval_val", cfg, [report]
    )
    assert run_id == card["mlflow"]["run_id"]
    run = client.get_run(run_id)
    assert (
        run.data.metrics["val_mAP50"] == 0.5
        and run.data.metrics["val_n"] == 4
        and "val_x" not in run.data.metrics
    )
    assert {a.path for a in client.list_artifacts(run_id, "eval_val")} == {"eval_val/per_class.tsv"}

    given = {**card, "imported_from": {"source": "mlflow", "uri": "models:/aquaflow_lake/1"}}
    own = tracking.log_evaluation(given, {"val_mAP50": 0.25}, "eval_val", cfg)
    assert own != run_id
    other = client.get_run(own)
    assert other.data.tags["step"] == "evaluate" and other.data.metrics["val_mAP50"] == 0.25
    assert client.get_run(run_id).data.metrics["val_mAP50"] == 0.5  # the training run is left alone


def test_metric_keys_mlflow_accepts():
    assert tracking.metric_key("metrics/mAP50-95(B)") == "metrics/mAP50-95B"
    assert tracking.metric_key("val_macro_f1") == "val_macro_f1"
    assert tracking.metric_key("lr/pg0") == "lr/pg0"
