"""Model cards and the `aquaflow` command: a given model predicts without any config."""

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from aquaflow.backends import torch_model as models
from aquaflow.io import sha256_file, write_json
from aquaflow.models import artifacts

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random-weight classifier saved as the workflow saves models."""
    out = tmp_path_factory.mktemp("model")
    models.save_weights(models.build("lcnet_050", len(CLASSES)), out / "model.safetensors")
    card = {
        "id": sha256_file(out / "model.safetensors"),
        "format": "safetensors",
        "weights": "model.safetensors",
        "backend": "torch",
        "task": "classify",
        "arch": "lcnet_050",
        "classes": CLASSES,
        "input_size": 32,
        "normalization": {"mean": list(models.IMAGENET_MEAN), "std": list(models.IMAGENET_STD)},
    }
    write_json(card, out / "model_card.json")
    return out


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda c: c.pop("classes"), "model card has no 'classes'"),
        (lambda c: c.update(classes=["a", "a"]), "'classes': ['a', 'a'] has non-unique elements"),
        (lambda c: c.update(input_size="big"), "'input_size'"),
        (lambda c: c.update(input_size=4), "'input_size': 4 is less than the minimum of 16"),
        (lambda c: c["normalization"].update(std=[1, 1]), "'normalization.std': [1, 1] is too short"),
        (
            lambda c: c["normalization"].update(std=[1, 0, 1]),
            "'normalization.std.1': 0 is less than or equal to the minimum of 0",
        ),
        (lambda c: c.update(arch="no_such_net"), "'arch'"),
        (
            lambda c: c.update(weights="../../model.safetensors"),
            "'weights': '../../model.safetensors' does not match",
        ),
        (lambda c: c.update(format="keras"), "'format': 'safetensors' was expected"),
        (lambda c: c.update(task="count"), "'task': 'count' is not one of"),
    ],
)
def test_card_errors_name_the_key(model_dir, edit, needle):
    card = json.loads((model_dir / "model_card.json").read_text())
    edit(card)
    with pytest.raises(artifacts.ModelCardError, match=re.escape(needle)):
        artifacts.validate_card(card, "card.json")


def test_cards_are_written_only_valid_and_with_their_id(model_dir, tmp_path):
    card = json.loads((model_dir / "model_card.json").read_text())
    artifacts.write_card(card, tmp_path / "ok.json")
    assert json.loads((tmp_path / "ok.json").read_text()) == card
    with pytest.raises(artifacts.ModelCardError, match="has no 'id'"):
        artifacts.write_card({k: v for k, v in card.items() if k != "id"}, tmp_path / "no_id.json")
    with pytest.raises(artifacts.ModelCardError, match="has no 'input_size'"):
        artifacts.write_card({k: v for k, v in card.items() if k != "input_size"}, tmp_path / "bad.json")
    assert not (tmp_path / "no_id.json").exists() and not (tmp_path / "bad.json").exists()


def test_import_checks_weights_against_card_and_pin(model_dir, tmp_path):
    out_w, out_c = tmp_path / "m/model.safetensors", tmp_path / "m/model_card.json"
    card = artifacts.import_model({"source": "path", "path": str(model_dir)}, out_w, out_c)
    assert (
        card["id"] == sha256_file(out_w)
        and json.loads(out_c.read_text())["imported_from"]["source"] == "path"
    )
    with pytest.raises(artifacts.ModelCardError, match=r"differs from model\.sha256"):
        artifacts.import_model({"source": "path", "path": str(model_dir), "sha256": "f" * 64}, out_w, out_c)
    tampered = shutil.copytree(model_dir, tmp_path / "tampered")
    with open(tampered / "model.safetensors", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(artifacts.ModelCardError, match=r"differs from the card's id"):
        artifacts.import_model({"source": "path", "path": str(tampered)}, out_w, out_c)


def test_cli_predicts_a_folder_and_lists_models(model_dir, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(7):
        Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)).save(images / f"p{i}.png")
    (images / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "aquaflow.cli"]
    proc = subprocess.run(
        [*cli, "predict", str(images), "--model", str(model_dir), "-o", str(out), "--top-k", "2"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    pred, rej = pd.read_parquet(out / "predictions.parquet"), pd.read_parquet(out / "rejected.parquet")
    assert len(pred) == 7 and len(rej) == 1 and rej["source"].iloc[0].endswith("broken.jpg")
    assert (pred["model_id"] == sha256_file(model_dir / "model.safetensors")).all()
    assert set(pred["top1_label"]) <= set(CLASSES) and "top2_prob" in pred
    results = tmp_path / "results"
    shutil.copytree(model_dir, results / "plankton" / "model")
    listing = subprocess.run([*cli, "models", "--results", str(results)], capture_output=True, text=True)
    assert (
        listing.returncode == 0
        and "usecase=plankton" in listing.stdout
        and "arch=lcnet_050" in listing.stdout
    )


def test_import_from_an_installed_package(model_dir, tmp_path, monkeypatch):
    site = tmp_path / "site"
    shutil.copytree(model_dir, site / "published_models" / "flowcam_v1")
    (site / "published_models" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(site))
    spec = {"source": "package", "package": "published_models", "subdir": "flowcam_v1"}
    card = artifacts.import_model(spec, tmp_path / "m/model.safetensors", tmp_path / "m/model_card.json")
    assert card["id"] == sha256_file(model_dir / "model.safetensors")
    assert card["imported_from"] == spec
