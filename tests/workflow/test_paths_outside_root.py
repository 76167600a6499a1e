"""A campaign whose manifest names files outside its folder, through the workflow: those rows are
rejected as outside_root (never read), the others predicted, and the counts reconcile. (The named
opt-out `allow_paths_outside_root`, and staging without a shared file system, which packs nothing
for those rows: tests/unit/test_paths_outside_root.py.)"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from ..conftest import run_snakemake, write_workdir

pytestmark = pytest.mark.workflow


def given_model(folder):
    """An untrained tiny timm classifier with its card: a model given by path (no training)."""
    import timm
    import torch

    from aquaflow.backends import torch_model
    from aquaflow.io import write_json

    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch_model.save_weights(
        timm.create_model("test_efficientnet", num_classes=2), folder / "model.safetensors"
    )
    card = {
        "format": "safetensors",
        "arch": "test_efficientnet",
        "classes": ["a", "b"],
        "input_size": 32,
        "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
    }
    write_json(card, folder / "model_card.json")
    return folder


def test_a_campaign_manifest_naming_files_outside_its_folder(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    Image.fromarray(np.full((20, 20, 3), 200, np.uint8)).save(outside / "private.png")
    data = tmp_path / "work" / "data"
    data.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(data / f"p{i}.png")
    rows = ["p0.png", "p1.png", str(outside / "private.png"), "../../elsewhere/private.png", "p2.png"]
    pd.DataFrame({"path": rows}).to_csv(data / "list.csv", index=False)
    uc = {
        "task": "classify",
        "model": {"source": "path", "path": str(given_model(tmp_path / "model"))},
        "inference": {"top_k": 2, "device": "cpu"},
        "campaigns": {"c": {"inputs": [{"kind": "manifest", "path": "data/list.csv"}]}},
    }
    work = write_workdir(tmp_path / "work", {"uc": uc})
    targets = ["results/uc/campaigns/c/summary.json"]
    run_snakemake(work, *targets, "--set-scatter", "infer=1")  # one shard: the rows, not the scatter
    camp = work / "results" / "uc" / "campaigns" / "c"
    pred, rej = pd.read_parquet(camp / "predictions.parquet"), pd.read_parquet(camp / "rejected.parquet")
    assert sorted(pred["seq"]) == [0, 1, 4]
    assert dict(zip(rej["seq"], rej["reason"], strict=True)) == {2: "outside_root", 3: "outside_root"}
    assert "outside_root" not in pred.columns  # the listing's flag is not a prediction column
    summary = json.loads((camp / "summary.json").read_text())
    assert summary["predicted"] + summary["rejected"] == len(rows) == 5

    # the named opt-out reaches the listing: it reruns (not the model import) and reads every row
    uc["allow_paths_outside_root"] = True
    write_workdir(work, {"uc": uc})
    proc = run_snakemake(work, *targets, "--set-scatter", "infer=1")
    assert "rule infer_inputs:" in proc.stderr and "rule import_model:" not in proc.stderr
    assert sorted(pd.read_parquet(camp / "predictions.parquet")["seq"]) == [0, 1, 2, 3, 4]
