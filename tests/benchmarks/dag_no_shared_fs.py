"""Dry-run time of a 400,000-image campaign in 64 shards, with and without a shared file system.

Prints `name: value` lines (not a timed test; run it by hand):

    .venv/bin/python tests/benchmarks/dag_no_shared_fs.py [--items 400000] [--shards 64]

Without a shared file system the images reach the shards as one staged bundle per shard
(workflow/staging.smk), so the DAG has one staging job and `shards` shard jobs whatever the number
of images. S3 is a local moto server on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from tests.conftest import local_s3, tiny_usecase, workflow_cmd, write_workdir  # noqa: E402


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


class RequestCounter(logging.Handler):
    """Counts the requests the moto server logs (werkzeug, one INFO line each), printing none."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.n = 0
        log = logging.getLogger("werkzeug")
        log.setLevel(logging.INFO)
        log.propagate = False
        log.handlers = [self]

    def emit(self, record: logging.LogRecord) -> None:
        self.n += 1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--items", type=int, default=400_000)
    ap.add_argument("--shards", type=int, default=64)
    args = ap.parse_args()
    with local_s3("bench") as (endpoint, _), tempfile.TemporaryDirectory() as tmp:
        requests = RequestCounter()
        work = Path(tmp)
        paths = [f"/data/flowcam/2026/{i:07d}.jpg" for i in range(args.items)]
        pd.DataFrame({"path": paths}).to_parquet(work / "year.parquet")
        uc = tiny_usecase()
        uc["campaigns"] = {"y2026": {"inputs": [{"kind": "manifest", "path": str(work / "year.parquet")}]}}
        write_workdir(work, {"flowcam": uc})
        env = {
            **os.environ,
            "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "testing",
            "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "testing",
        }
        common = ["-n", "--set-scatter", f"infer={args.shards}"]
        runs = {
            "shared_fs": ["--cores", "2"],
            # a remote executor (the local one would reassert a shared file system), as in
            # tests/workflow/test_no_shared_fs.py; a dry run submits nothing
            "no_shared_fs_s3": [
                "--executor",
                "cluster-generic",
                "--cluster-generic-submit-cmd",
                "true",
                "--cluster-generic-status-cmd",
                "true",
                "--shared-fs-usage",
                "none",
                "--default-storage-provider",
                "s3",
                "--default-storage-prefix",
                "s3://bench/run",
                "--storage-s3-endpoint-url",
                endpoint,
                "--jobs",
                "2",
            ],
        }
        print(f"machine: {cpu_model()}, {os.cpu_count()} cores; date: {time.strftime('%Y-%m-%d')}")
        for name, extra in runs.items():
            requests.n = 0
            t0 = time.perf_counter()
            proc = subprocess.run(
                workflow_cmd(work, *common, *extra), cwd=work, capture_output=True, text=True, env=env
            )
            seconds = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(proc.stderr[-3000:])
            out = proc.stdout + proc.stderr
            jobs = {
                rule: n
                for line in out.splitlines()
                if len(parts := line.split()) == 2 and parts[1].isdigit()
                for rule, n in [parts]
            }
            print(f"dry_run_{args.items}_items_{args.shards}_shards_{name}_s: {seconds:.2f}")
            print(f"dry_run_{args.items}_items_{args.shards}_shards_{name}_s3_requests: {requests.n}")
            print(f"  jobs: {jobs}")


if __name__ == "__main__":
    main()
