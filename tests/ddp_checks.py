"""The check shared by the DDP tests: a distributed training's model against single-process
training of the same recipe and seed."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from safetensors.torch import load_file

from aquaflow.backends import torch_train as train
from aquaflow.io import read_json

from .conftest import REPO


def gap_to_single_process(uc: dict, work: Path) -> tuple[float, float]:
    """(largest weight difference between the workflow's trained model and single-process training
    of `uc` on the same prepared data, largest weight change of that model from its seeded init)."""
    from aquaflow.config import validate

    cfg = validate(uc, REPO / "workflow/schemas/usecase.schema.yaml", "test")
    results = work / "results/flowcam"
    manifest = pd.read_parquet(results / "prepared/manifest.parquet")
    classes = read_json(results / "prepared/classes.json")["classes"]
    images = work / "resources/flowcam/raw" / cfg["dataset"]["images"]
    single = {**cfg["training"], "cache": False, "distributed": False}
    _, base = train.train(manifest, images, classes, cfg["model"], single, 1)
    expected, ddp = base.state_dict(), load_file(results / "model/model.safetensors")
    assert ddp.keys() == expected.keys()
    worst = max((ddp[k].float() - expected[k].float()).abs().max().item() for k in ddp)
    train.seed_everything(cfg["training"]["seed"])
    init = train.models.build(cfg["model"]["arch"], len(classes)).state_dict()
    moved = max((ddp[k].float() - init[k].float()).abs().max().item() for k in ddp)
    return worst, moved
