"""Training at scale on the real FlowCam demo images: the decode-once cache.

DDP is tested through the workflow (tests/workflow/test_train_scale.py) and the Slurm test cluster
(tests/cluster/test_slurm.py); here, how a rank started by srun names its world."""

import os

import numpy as np
import pandas as pd
import pytest
import torch

from aquaflow.backends import distributed
from aquaflow.backends import torch_train as train
from aquaflow.data import loader
from aquaflow.io import read_json

from ..conftest import tiny_usecase
from .test_train import prepared, validated  # noqa: F401 (a fixture)


@pytest.fixture(scope="module")
def cache(prepared, tmp_path_factory):  # noqa: F811
    """The demo manifest decoded once at the tiny use case's 64 px."""
    root, raw = prepared
    manifest = pd.read_parquet(root / "manifest.parquet")
    path = tmp_path_factory.mktemp("cache") / "images_64px.npy"
    images = raw / tiny_usecase()["dataset"]["images"]
    loader.cache_step(manifest_path=root / "manifest.parquet", images_root=images, size=64, out=path)
    return manifest, path


def test_cached_loader_yields_the_decoded_tensors(prepared, cache):  # noqa: F811
    """Every image read from the cache is the decoded, letterboxed image bit for bit; a cache
    built for another size (or other data) is refused, not used."""
    images = prepared[1] / tiny_usecase()["dataset"]["images"]
    manifest, path = cache
    assert np.load(path, mmap_mode="r").shape == (105, 3, 64, 64)
    labels = list(range(len(manifest)))
    decoded = train.LabelledImages(images, manifest, labels, 64)
    cached = train.LabelledImages(images, manifest, labels, 64, cache=loader.ImageCache(path, manifest, 64))
    for i in range(len(manifest)):
        (a, ya), (b, yb) = decoded[i], cached[i]
        assert a.dtype == b.dtype == torch.uint8
        assert ya == yb and a.shape == (3, 64, 64) and bool((a == b).all()), manifest["path"][i]
    with pytest.raises(ValueError, match=r"at 64 px, not for this manifest .* at 96 px"):
        loader.ImageCache(path, manifest, 96)
    with pytest.raises(ValueError, match="rebuild it"):
        loader.ImageCache(path, manifest.iloc[1:], 64)


def test_training_from_the_cache_gives_the_same_weights(prepared, cache, repo):  # noqa: F811
    """One epoch with the default augmentation (applied to the cached uint8 tensors as to the
    decoded ones): same seed, same weights bit for bit, with or without the cache."""
    manifest, path = cache
    uc = validated(tiny_usecase(), repo)
    uc["training"].update(epochs=1, balancing="none")
    assert uc["training"]["augmentation"] and uc["training"]["num_workers"] is None
    classes = read_json(prepared[0] / "classes.json")["classes"]
    images = prepared[1] / uc["dataset"]["images"]
    states = []
    for cache_path in (None, path):
        result, base = train.train(
            manifest, images, classes, uc["model"], uc["training"], 1, None, None, cache_path
        )
        assert result.epochs_run == 1 and 0 <= result.best_val_macro_f1 <= 1
        states.append(base.state_dict())
    a, b = states
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


SLURM_TASK = {"SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1"}
SCONTROL = "JobId=7 JobName=x NumNodes=1 NumCPUs=8 NumTasks=8 CPUs/Task=4 NodeList=vm"


def test_ranks_and_threads_of_a_launch():
    """torchrun: the job's ranks share its threads; srun: the Slurm job's tasks, each with its cpus
    per task (as `scontrol show job` tells them); srun outside a Slurm job of tasks, or another
    launcher, stops with the reason."""
    job = dict(field.split("=", 1) for field in SCONTROL.split())
    assert distributed.ranks_and_threads(2, 8, None) == (2, 4)
    assert distributed.ranks_and_threads(4, 2, None) == (4, 1)
    assert distributed.ranks_and_threads(1, 2, "srun --mpi=none", job) == (8, 4)
    assert distributed.ranks_and_threads(1, 2, "srun", {**job, "CPUs/Task": "N/A"}) == (8, 1)
    with pytest.raises(RuntimeError, match=r"mpi resource .*needs a Slurm job"):
        distributed.ranks_and_threads(1, 2, "srun", {})
    with pytest.raises(ValueError, match="srun; got 'mpirun -np 8'"):
        distributed.ranks_and_threads(1, 2, "mpirun -np 8", job)
    rendezvous = distributed.slurm_rendezvous(job)  # one node: rank 0 is on this one
    assert rendezvous["MASTER_ADDR"] == "127.0.0.1" and 0 < int(rendezvous["MASTER_PORT"]) < 65536


def test_a_rank_started_by_srun_names_its_world_from_its_slurm_task(monkeypatch):
    """RANK, WORLD_SIZE and LOCAL_RANK come from SLURM_PROCID, SLURM_NTASKS and SLURM_LOCALID, only
    in a step the launch marked (a Slurm job's own batch step is no rank)."""
    world = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "AQUAFLOW_DDP_SLURM")
    environ = {k: v for k, v in os.environ.items() if k not in world}
    monkeypatch.setattr(os, "environ", {**environ, **SLURM_TASK})  # what it sets goes with it
    distributed.world_from_slurm()
    assert not distributed.launched()
    os.environ["AQUAFLOW_DDP_SLURM"] = "1"
    distributed.world_from_slurm()
    assert distributed.launched() and not distributed.is_main()
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("5", "8", "1")
