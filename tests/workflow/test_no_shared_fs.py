"""The FlowCam demo, fish detection and litter with no shared file system: S3 storage (moto,
127.0.0.1), every job in a fresh empty directory (cluster-generic executor), one run for the three
use cases; the demo gives the same predictions and EcoTaxa zip as a local run.

What this mirrors of Kubernetes: `--shared-fs-usage none`, S3 default storage, workflow sources
deployed to jobs through S3 (`--job-deploy-sources`, as the Kubernetes executor does), jobs that
see nothing but their fetched inputs. What it does not: pods, images, a real cluster.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ..conftest import REPO, given_model, local_s3, workflow_cmd, write_workdir
from ..wf_b_fixtures import DEMO, demo_done, demo_usecase

pytestmark = pytest.mark.workflow
BUCKET = "aquaflow-nofs"
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def s3():
    with local_s3(BUCKET) as (endpoint, client):
        yield endpoint, client


def checkout(dest: Path) -> Path:
    """A user's copy of the workflow (sources are deployed relative to the working directory)."""
    dest.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("Snakefile", "workflow", "scripts", "envs"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=ignore)
        else:
            shutil.copy2(src, dest / name)
    # a clone: snakemake ships git-tracked files (schemas, report captions) with the job sources
    subprocess.run(["git", "init", "-q", str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "add", "."], check=True)
    return dest


def remote_cmd(work: Path, endpoint: str, *targets: str) -> list[str]:
    """snakemake with no shared file system: S3 storage, jobs in fresh dirs via cluster-generic."""
    cmd = workflow_cmd(
        work,
        *targets,
        "--executor",
        "cluster-generic",
        "--cluster-generic-submit-cmd",
        f"bash {HERE / 'fresh_dir_submit.sh'}",
        "--cluster-generic-status-cmd",
        f"bash {HERE / 'fresh_dir_status.sh'}",
        "--shared-fs-usage",
        "none",
        "--job-deploy-sources",  # as the Kubernetes executor: sources reach jobs through S3
        "--default-storage-provider",
        "s3",
        "--default-storage-prefix",
        f"s3://{BUCKET}/run",
        "--storage-s3-endpoint-url",
        endpoint,
        "--jobs",
        "2",
        "--seconds-between-status-checks",
        "1",
        "--set-resources",
        "infer_shard:gpu=0",
        "train:gpu=0",
        "detect_shard:gpu=0",
        "train_detect:gpu=0",
        "evaluate_detect:gpu=0",
    )
    # run from the checkout (cwd), as a user does: no --directory, which snakemake would hand on
    # to the jobs and so send them back into this directory
    i = cmd.index("--directory")
    del cmd[i : i + 2]
    cmd[cmd.index("--snakefile") + 1] = "Snakefile"  # the checkout's own, relative to the workdir
    return cmd


def remote_env(jobs: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "YOLO_"))}
    return env | {
        # this checkout's library first (an editable install elsewhere would otherwise win in jobs)
        "PYTHONPATH": str(REPO / "scripts"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # as in an image
        "AQUAFLOW_JOBS": str(jobs),
        "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "testing",
        "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "testing",
    }


def rules_run(jobs: Path) -> set[tuple[str, str]]:
    """(rule, use case) of every remote job (each ran in its own fresh directory)."""
    found = set()
    for p in jobs.glob("*/job.log"):
        text = p.read_text()
        found.add((re.search(r"^(?:local)?rule (\w+):", text, re.M)[1], re.search(r"\buc=(\w+)", text)[1]))
    return found


DEMO_TARGETS = (f"{DEMO}/predictions.parquet", f"{DEMO}/export/ecotaxa_flowcam_demo.zip")
DETECT_TARGETS = (
    "results/fish/campaigns/demo/summary.json",
    "results/litter/campaigns/survey/litter/summary.tsv",
)


def fish_usecase(tmp_path: Path) -> dict:
    """Fish detection on 12 + 4 synthetic scenes of 64 px, one epoch."""
    from aquaflow.synthetic import scenes

    fish = yaml.safe_load((REPO / "config/usecases/fish_detection.yaml").read_text())
    data = scenes.write_dataset("fish", tmp_path / "fish", 12, 4, (64, 64), seed=2).parent
    fish["source"] = {"kind": "path", "path": str(data)}
    det = fish["detection"]
    det["imgsz"] = 64
    det["train"] = {"epochs": 1, "batch": 8, "device": "cpu", "validate_each_epoch": False}
    det["predict"].update(device="cpu", batch=8)
    det["overlays"] = 2
    return fish


def litter_usecase(tmp_path: Path) -> tuple[dict, pd.DataFrame]:
    """Litter on 3 synthetic drone images of 3 x 4 tiles of 64 px (a zip), and their truth table."""
    from aquaflow.synthetic import litter

    truth = litter.write_dataset(tmp_path / "drone", n_images=3, rows=3, cols=4, tile=64, seed=1)
    lit = yaml.safe_load((REPO / "config/usecases/litter.yaml").read_text())
    lit["source"] = {
        "kind": "path",
        "path": shutil.make_archive(str(tmp_path / "drone"), "zip", tmp_path / "drone"),
    }
    lit["preprocess"]["patchify"]["tile"] = 64
    lit["model"].update({"arch": "resnet10t", "input_size": 32})
    lit["training"].update({"epochs": 1, "batch_size": 16, "early_stopping": {"patience": 0}})
    return lit, truth


@pytest.fixture(scope="module")
def remote(s3, tmp_path_factory, flowcam_model):
    """One run with no shared file system, three use cases: the FlowCam demo from fetch to the
    EcoTaxa zip with the session's model as a given model, fish detection (trains) and litter
    (preprocesses, trains). Returns (checkout, job folders, litter truth)."""
    endpoint, _ = s3
    root = tmp_path_factory.mktemp("nofs")
    flowcam = demo_usecase()
    flowcam["model"] |= given_model(flowcam_model)
    lit, truth = litter_usecase(root)
    work = write_workdir(
        checkout(root / "remote"), {"flowcam": flowcam, "fish": fish_usecase(root), "litter": lit}
    )
    jobs = root / "jobs"
    jobs.mkdir()
    cmd = remote_cmd(work, endpoint, *DEMO_TARGETS, *DETECT_TARGETS)
    t0 = time.perf_counter()
    # what two runs did (900 s each) in one run
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=remote_env(jobs), timeout=1800)
    logs = "\n".join(p.read_text()[-1500:] for p in jobs.glob("*/job.log"))
    assert proc.returncode == 0, proc.stderr[-5000:] + logs
    print(f"no-shared-fs run (flowcam, fish, litter): {time.perf_counter() - t0:.1f} s")
    return work, jobs, truth


@pytest.fixture(scope="module")
def local(tmp_path_factory, flowcam_trained) -> Path:
    """The same demo use case run locally on a shared file system (shared with test_standards)."""
    return demo_done(tmp_path_factory, flowcam_trained)


def test_demo_without_shared_file_system_matches_a_local_run(s3, remote, local, tmp_path):
    """Remote: the demo from fetch to the EcoTaxa zip (dataset preparation, model import, shards,
    exports), every job in a fresh empty directory. Local: the same use case and model on a shared
    file system. Predictions and the zip must be identical."""
    _, client = s3
    work, jobs, _ = remote

    def fetch(key: str, dest: Path) -> Path:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(client.get_object(Bucket=BUCKET, Key=f"run/{key}")["Body"].read())
        return dest

    for target in DEMO_TARGETS:
        fetch(target, tmp_path / "remote_out" / target)
    a = pd.read_parquet(local / DEMO_TARGETS[0])
    b = pd.read_parquet(tmp_path / "remote_out" / DEMO_TARGETS[0])
    assert len(a) == 105
    pd.testing.assert_frame_equal(a, b)  # every column: ids, sources, labels, probabilities, run id
    zips = local / DEMO_TARGETS[1], tmp_path / "remote_out" / DEMO_TARGETS[1]
    with zipfile.ZipFile(zips[0]) as za, zipfile.ZipFile(zips[1]) as zb:
        assert za.namelist() == zb.namelist() and len(za.namelist()) == 106  # TSV + 105 images
        assert all(za.read(n) == zb.read(n) for n in za.namelist())

    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"run/{DEMO}/staged/")["Contents"]
    assert sorted(o["Key"].rsplit("/", 1)[1] for o in listed) == ["1-of-2.zip", "2-of-2.zip"]
    # the demo's remote jobs (shards, exports) each ran in their own empty directory; the model
    # import is a local rule. Preparing and training without a shared file system:
    # test_detection_and_preprocessing_without_shared_file_system (litter, fish)
    ran = rules_run(jobs)
    assert {("infer_shard", "flowcam"), ("export_ecotaxa_bundle", "flowcam")} <= ran, ran
    assert not (work / "results").exists()  # the run left its results only in S3


def test_detection_and_preprocessing_without_shared_file_system(s3, remote):
    """Detection shards read their staged bundles; the rules that write a directory (preprocess,
    litter overlays, detection dataset and gather) run on the host and their folders reach the
    remote jobs (train, shards) through S3. Every input image is accounted for; none is `missing`,
    which is what a shard that cannot see the images reports."""
    _, client = s3
    work, jobs, truth = remote

    def read(key: str) -> bytes:
        return client.get_object(Bucket=BUCKET, Key=f"run/results/{key}")["Body"].read()

    def keys(prefix: str, ext: str = "") -> list[str]:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=f"run/results/{prefix}"
        )
        found = [o["Key"].split(prefix, 1)[1] for page in pages for o in page.get("Contents", [])]
        return sorted(k for k in found if k.endswith(ext))

    summary = json.loads(read("fish/campaigns/demo/summary.json"))
    assert summary["seen"] == summary["predicted"] == 16 and summary["rejected"] == 0, summary
    assert keys("fish/campaigns/demo/staged/") == ["1-of-2.zip", "2-of-2.zip"]
    assert len(keys("fish/campaigns/demo/overlays/", ".png")) == 2
    tiles = pd.read_csv(io.BytesIO(read("litter/campaigns/survey/litter/summary.tsv")), sep="\t")
    assert sorted(tiles["image"].unique()) == sorted(truth["image"].unique())
    assert (tiles.groupby("image")["tiles"].sum() == 12).all()  # 3 x 4 tiles of every image
    assert len(keys("litter/preprocessed/", ".png")) == 36
    assert keys("litter/campaigns/survey/litter/overlays/", ".png") == sorted(
        f"{i}.png" for i in tiles["image"].unique()
    )
    ran = rules_run(jobs)
    expected = {("train_detect", "fish"), ("detect_shard", "fish")}
    assert expected | {("prepare", "litter"), ("train", "litter"), ("infer_shard", "litter")} <= ran, ran
    assert not (work / "results").exists()
