"""Training on the real FlowCam demo images with a tiny budget: determinism, outputs, MLflow."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from safetensors.torch import load_file

from aquaflow.backends import torch_train as train
from aquaflow.data.dataset import build_manifest
from aquaflow.io import write_json, write_parquet

from ..conftest import tiny_usecase
from .test_dataset import FLOWCAM


@pytest.fixture(scope="module")
def prepared(planktonclas_resources, tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    manifest, _, classes = build_manifest(planktonclas_resources, FLOWCAM)
    write_parquet(manifest, root / "manifest.parquet")
    write_json({"classes": classes}, root / "classes.json")
    return root, planktonclas_resources


def run_training(prepared, out, uc):
    root, raw = prepared
    mlcfg = {"tracking_uri": f"sqlite:///{out}/mlflow.db", "experiment": "t", "results": str(out)}
    settings = {
        "images": uc["dataset"]["images"],
        "model": uc["model"],
        "training": uc["training"],
        "data": {"kind": "package", "package": "planktonclas"},
    }
    names = {"weights": "m.safetensors", "card": "card.json", "history": "history.tsv", "curve": "curve.png"}
    card = train.run(
        name="flowcam",
        settings=settings,
        raw=raw,
        manifest_path=root / "manifest.parquet",
        classes_path=root / "classes.json",
        out={k: out / v for k, v in names.items()},
        mlflow_cfg=mlcfg,
        threads=2,
    )
    return card, mlcfg


def validated(uc, repo):
    from aquaflow.config import validate

    return validate(uc, repo / "workflow/schemas/usecase.schema.yaml", "test")


def test_training_is_deterministic_and_tracked(prepared, tmp_path, repo):
    uc = validated(tiny_usecase(), repo)
    a, mlcfg = run_training(prepared, tmp_path / "a", uc)
    b, _ = run_training(prepared, tmp_path / "b", uc)
    assert a["id"] == b["id"], "same data + seed on CPU must give identical weights"
    wa = load_file(tmp_path / "a" / "m.safetensors")
    assert all(np.isfinite(v.numpy()).all() for v in wa.values())

    card = json.loads((tmp_path / "a" / "card.json").read_text())
    assert card["classes"][0] == "Actinoptychus" and len(card["classes"]) == 6
    assert card["arch"] == "lcnet_050" and card["input_size"] == 64
    assert card["training"]["images"] == {"test": 8, "train": 82, "val": 15}
    assert len(card["training"]["manifest_sha256"]) == 64
    assert set(card["libraries"]) >= {"torch", "timm", "python"}
    hist = pd.read_csv(tmp_path / "a" / "history.tsv", sep="\t")
    assert list(hist["epoch"]) == [1, 2, 3]
    assert hist[["val_acc", "val_macro_f1"]].apply(lambda c: c.between(0, 1)).all().all()

    mlflow.set_tracking_uri(mlcfg["tracking_uri"])
    run = mlflow.get_run(card["mlflow"]["run_id"])
    assert run.data.params["training.epochs"] == "3"
    assert run.data.params["model.arch"] == "lcnet_050"
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "val_macro_f1")
    assert [m.step for m in history] == [1, 2, 3]
    artifacts = {f.path for f in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id)}
    assert {"card.json", "val_confusion_matrix.png", "val_confusion_matrix.json"} <= artifacts


def one_epoch(prepared, out, repo, **training):
    """Weights (name -> array) and card of a 1-epoch training with these training settings."""
    uc = validated(tiny_usecase(), repo)
    uc["training"].update({"epochs": 1, **training})
    card, _ = run_training(prepared, out, uc)
    return {k: v.numpy() for k, v in load_file(out / "m.safetensors").items()}, card


@pytest.fixture(scope="module")
def baseline(prepared, tmp_path_factory, repo):
    """One epoch of the tiny use case without class balancing."""
    return one_epoch(prepared, tmp_path_factory.mktemp("baseline"), repo, balancing="none")


def same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_seed_changes_weights(prepared, baseline, tmp_path, repo):
    """The same seed gives the same weights bit for bit; another seed other weights (so the seed,
    not chance, decides them)."""
    again, card = one_epoch(prepared, tmp_path / "again", repo, balancing="none")
    assert same_weights(again, baseline[0]) and card["id"] == baseline[1]["id"]
    other, card7 = one_epoch(prepared, tmp_path / "seed7", repo, balancing="none", seed=7)
    assert not same_weights(other, baseline[0]) and card7["id"] != baseline[1]["id"]
    assert card7["training"]["config"]["seed"] == 7


@pytest.mark.parametrize("balancing", ["resample", "weights"])
def test_balancing_modes_train(prepared, baseline, tmp_path, repo, balancing):
    """Resampling and loss weights each change what is learnt from the same data and seed (a mode
    that did nothing would reproduce the unbalanced weights exactly, as the seed test shows)."""
    weights, card = one_epoch(prepared, tmp_path, repo, balancing=balancing)
    assert card["training"]["config"]["balancing"] == balancing
    assert baseline[1]["training"]["config"]["balancing"] == "none"
    assert not same_weights(weights, baseline[0])
    assert 0.0 <= card["metrics"]["val_accuracy"] <= 1.0


def test_pretrained_weights_are_loaded_from_a_path(prepared, tmp_path, repo):
    uc = validated(tiny_usecase(), repo)
    uc["training"]["epochs"] = 1
    _first, _ = run_training(prepared, tmp_path / "a", uc)
    uc["model"]["pretrained"] = {"kind": "path", "path": str(tmp_path / "a" / "m.safetensors")}
    uc["training"]["lr"] = 1e-12  # practically no update: the result must equal the start
    uc["training"]["warmup_epochs"] = 0
    uc["training"]["augmentation"] = []
    _second, _ = run_training(prepared, tmp_path / "b", uc)
    wa, wb = load_file(tmp_path / "a" / "m.safetensors"), load_file(tmp_path / "b" / "m.safetensors")
    conv = next(k for k in wa if k.endswith("weight") and wa[k].ndim == 4)
    assert np.allclose(wa[conv].numpy(), wb[conv].numpy(), atol=1e-6)
