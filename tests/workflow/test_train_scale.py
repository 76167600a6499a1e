"""Training at scale through the workflow: the decode-once cache rule and DDP launched by the
train rule (2 CPU ranks, gloo), compared with single-process training of the same recipe."""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from aquaflow.io import read_json

from ..conftest import REPO, tiny_usecase, workflow_cmd, write_workdir
from ..ddp_checks import gap_to_single_process


def test_two_ranks_from_the_cache_train_the_single_process_model(tmp_path):
    """training.cache + training.distributed with the train job's gpu resource at 2: the cache rule
    runs once, torchrun starts 2 ranks that take halves of the same global batches (16; class-
    weighted, label-smoothed loss) from the cached pixels; after 2 epochs (12 steps) the weights
    equal single-process training on decoded images with the same seed within 1e-6 (float
    summation order), while training moved them 100x more; rank 0 alone wrote the card, the
    history and the one MLflow training run."""
    uc = tiny_usecase()
    uc["model"]["arch"] = "test_convnext"  # LayerNorm: BatchNorm is synchronised on GPUs only
    uc["training"].update(epochs=2, augmentation=[], balancing="weights", cache=True, distributed=True)
    work = write_workdir(tmp_path, {"flowcam": uc})
    card_path = "results/flowcam/model/model_card.json"
    cmd = workflow_cmd(
        work, card_path, "--cores", "2", "--resources", "gpu=2", "--set-resources", "train:gpu=2"
    )
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["PYTHONPATH"] = str(REPO / "scripts")
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-6000:]

    model = work / "results/flowcam/model"
    log = (work / "results/flowcam/logs/train.log").read_text()
    assert "training.distributed: 2 ranks started by torchrun" in log
    assert "loader: 0 workers" in log and "images_64px.npy" in log
    assert np.load(work / "results/flowcam/prepared/images_64px.npy", mmap_mode="r").shape == (105, 3, 64, 64)
    card = read_json(model / "model_card.json")
    assert card["training"]["config"]["distributed"] is True and card["training"]["epochs_run"] == 2
    assert list(pd.read_csv(model / "history.tsv", sep="\t")["epoch"]) == [1, 2]
    client = MlflowClient(f"sqlite:///{(work / 'results/mlflow/mlflow.db').resolve()}")
    runs = client.search_runs(client.get_experiment_by_name("aquaflow").experiment_id)
    assert [r.info.run_id for r in runs] == [card["mlflow"]["run_id"]]

    worst, moved = gap_to_single_process(uc, work)
    assert worst < 1e-6 and moved > 100 * worst, (worst, moved)
