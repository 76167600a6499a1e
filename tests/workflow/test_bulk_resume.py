"""Bulk inference survives kill -9: finished shards are kept, the broken one reruns, output equal."""

import os
import shutil
import signal
import subprocess
import time

import pandas as pd
import pytest

from aquaflow.data.fetch import package_root
from aquaflow.synthetic.flowcam import perturbed_copies

from ..conftest import run_snakemake, tiny_usecase, trained_copy, workflow_cmd

pytestmark = pytest.mark.workflow
SHARDS = 2  # one to find finished and one to catch mid-way when the run is killed
SCATTER = ("--set-scatter", f"infer={SHARDS}")
TARGET = "results/flowcam/campaigns/bulk/predictions.parquet"
EXTRA = 55  # + the 105 demo images = 160 items, 80 per shard: 5 batches of 16 each


@pytest.fixture(scope="module")
def trained(tmp_path_factory, flowcam_trained):
    """A workdir with the session's trained tiny model (trained_copy) and EXTRA crops to predict."""
    uc = tiny_usecase()
    uc["inference"] = {"batch_size": 16}
    uc["campaigns"] = {"bulk": {"inputs": [{"kind": "dataset"}, {"kind": "folder", "path": "incoming"}]}}
    work = trained_copy(flowcam_trained, tmp_path_factory.mktemp("bulk") / "work", uc)
    perturbed_copies(
        package_root("planktonclas") / "resources" / "demo-images", work / "incoming", EXTRA, seed=3
    )
    return work


def test_kill_and_resume_gives_identical_output(trained, tmp_path):
    reference = shutil.copytree(trained, tmp_path / "reference", symlinks=True)
    run_snakemake(reference, TARGET, *SCATTER)

    work = shutil.copytree(trained, tmp_path / "killed", symlinks=True)
    shards = work / "results/flowcam/campaigns/bulk/shards"
    cmd = workflow_cmd(
        work,
        TARGET,
        *SCATTER,
        "--cores",
        "2",
        "--resources",
        "gpu=1",
    )
    err = open(tmp_path / "killed.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, cwd=work, stdout=err, stderr=err, start_new_session=True)
    items = [f"{i}-of-{SHARDS}" for i in range(1, SHARDS + 1)]

    def state():
        done = [i for i in items if (shards / f"{i}.parquet").exists()]
        busy = [i for i in items if i not in done and list(shards.glob(f".{i}.parquet.*.tmp"))]
        return done, busy

    deadline = time.time() + 300
    try:  # kill while a shard is predicting and another is finished (gpu=1: one at a time)
        while time.time() < deadline:
            assert proc.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
            done, busy = state()
            if done and busy:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    done, busy = state()
    assert done and busy, "no shard was caught mid-way"
    assert not (shards / f"{busy[0]}.parquet").exists()  # written atomically: no partial shard
    assert not (work / TARGET).exists()
    kept = {i: (shards / f"{i}.parquet").stat().st_mtime_ns for i in done}

    run_snakemake(work, "--unlock")
    proc = run_snakemake(work, TARGET, *SCATTER)
    for i, mtime in kept.items():  # finished shards were not recomputed
        assert (shards / f"{i}.parquet").stat().st_mtime_ns == mtime, i
        assert f"scatteritem={i}" not in proc.stderr
    assert f"scatteritem={busy[0]}" in proc.stderr  # the broken one was
    assert not list(shards.glob(".*.tmp"))
    for name in ("predictions.parquet", "rejected.parquet"):
        a = (reference / "results/flowcam/campaigns/bulk" / name).read_bytes()
        b = (work / "results/flowcam/campaigns/bulk" / name).read_bytes()
        assert a == b, f"{name} differs after kill and resume"
    pred = pd.read_parquet(work / TARGET)
    assert len(pred) == 105 + EXTRA and pred["seq"].is_unique
