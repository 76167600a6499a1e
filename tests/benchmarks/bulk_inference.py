"""Bulk inference benchmark: prints `name: value` lines (not a timed test; run it by hand).

Makes N FlowCam-like crops by re-encoding the real planktonclas demo images with small random
perturbations, trains a 1-epoch model of the configured architecture (accuracy is irrelevant
here), then runs the inference rules through Snakemake and reports end-to-end and model-only
throughput, overhead, peak RSS of a shard job, dry-run time for a 400k-image manifest and output
bytes per image.

    .venv/bin/python tests/benchmarks/bulk_inference.py --n 20000 --scatter 2 [--backend onnx]
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

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from aquaflow import inputs  # noqa: E402
from aquaflow.fetch import package_root  # noqa: E402
from aquaflow.infer import loader_settings  # noqa: E402
from aquaflow.synthetic.flowcam import perturbed_copies  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(work: Path, *args: str) -> float:
    t0 = time.perf_counter()
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), *args]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr[-4000:])
    return time.perf_counter() - t0


def model_only(work: Path, batch: int, threads: int, backend: str, reps: int = 20) -> float:
    """Forward passes of the same model on uint8 batches already in memory: images/s."""
    import torch

    from aquaflow.infer import Predictor

    model = work / "results/flowcam/model"
    pred = Predictor.load(model / "model.safetensors", model / "model_card.json", "auto", threads, backend)
    size = pred.card["input_size"]
    x = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    if pred.device.type == "cuda":
        x = x.pin_memory()
    for _ in range(3):
        pred(x)
    t0 = time.perf_counter()
    for _ in range(reps):
        pred(x)
    return reps * batch / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--scatter", type=int, default=2)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--backend", default="auto", choices=["auto", "eager", "compile", "onnx"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 64 on CPU")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--dry-run-items", type=int, default=400_000)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="aquaflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    threads = args.cores

    incoming = work / "incoming"
    if not incoming.exists():
        perturbed_copies(package_root("planktonclas") / "resources" / "demo-images", incoming, args.n, seed=1)
    uc = yaml.safe_load((REPO / "config/usecases/flowcam.yaml").read_text())
    uc["training"].update({"epochs": 1})
    uc["inference"] = {
        "inputs": [{"kind": "folder", "path": "incoming"}],
        "batch_size": args.batch_size,
        "backend": args.backend,
        "workers": args.workers,
    }
    (work / "config/usecases").mkdir(parents=True, exist_ok=True)
    (work / "config/usecases/flowcam.yaml").write_text(yaml.safe_dump(uc))
    (work / "config/config.yaml").write_text(
        yaml.safe_dump({"usecases": {"flowcam": "config/usecases/flowcam.yaml"}})
    )
    common = ["--cores", str(args.cores), "--resources", "gpu=1"]
    snakemake(work, "results/flowcam/model/model.safetensors", *common)

    res = work / "results/flowcam"
    for old in (res / "predictions", res / "benchmarks/infer_shard"):
        subprocess.run(["rm", "-rf", str(old)], check=True)
    target = "results/flowcam/predictions/predictions.parquet"
    wall = snakemake(
        work,
        target,
        "--set-scatter",
        f"infer={args.scatter}",
        "--set-threads",
        f"infer_shard={threads}",
        *common,
    )
    bench = pd.concat(
        [pd.read_csv(p, sep="\t") for p in sorted((res / "benchmarks/infer_shard").glob("*.tsv"))]
    )
    summaries = [json.loads(p.read_text()) for p in sorted((res / "predictions/summaries").glob("*.json"))]
    n = sum(s["seen"] for s in summaries)
    shard_seconds = sum(s["seconds"] for s in summaries)  # shards run one after another (gpu=1)
    e2e = n / shard_seconds
    batch, workers = loader_settings(
        {"device": "auto", "batch_size": args.batch_size, "workers": args.workers}, threads
    )
    mo = model_only(work, batch, threads, args.backend)

    t0 = time.perf_counter()
    listed = inputs.from_folder(incoming, [".jpg"])
    list_s = time.perf_counter() - t0

    # dry-run of a 400k-item manifest input with 64 shards
    big = work / "big"
    (big / "config/usecases").mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"path": [f"/data/flowcam/{i:07d}.jpg" for i in range(args.dry_run_items)]}).to_parquet(
        big / "manifest.parquet"
    )
    uc["inference"]["inputs"] = [
        {"kind": "manifest", "path": str(big / "manifest.parquet"), "column": "path"}
    ]
    (big / "config/usecases/flowcam.yaml").write_text(yaml.safe_dump(uc))
    (big / "config/config.yaml").write_text((work / "config/config.yaml").read_text())
    t0 = time.perf_counter()
    table = inputs.build(uc["inference"]["inputs"], big)
    manifest_s = time.perf_counter() - t0
    assert len(table) == args.dry_run_items
    dry = snakemake(big, "-n", "--set-scatter", "infer=64", *common)

    out_bytes = (res / "predictions/predictions.parquet").stat().st_size
    print(f"date: {time.strftime('%Y-%m-%d')}")
    print(f"machine: {platform.node()} {platform.machine()} {os.cpu_count()} cores")
    print(f"backend: {args.backend}")
    print(f"images: {n}")
    print(f"shards: {args.scatter}")
    print(f"batch_size: {batch}")
    print(f"decode_workers: {workers}")
    print(f"end_to_end_images_per_s: {e2e:.0f}")
    print(f"snakemake_command_images_per_s: {n / wall:.0f}")
    print(f"model_only_images_per_s: {mo:.0f}")
    print(f"overhead_pct: {100 * (mo / e2e - 1):.1f}")
    print(f"peak_rss_shard_mb: {bench['max_rss'].max():.0f}")
    print(f"peak_pss_shard_mb: {bench['max_pss'].max():.0f}")
    print(f"list_folder_s: {list_s:.2f} ({len(listed)} files)")
    print(f"manifest_{args.dry_run_items}_read_s: {manifest_s:.2f}")
    print(f"dry_run_{args.dry_run_items}_items_64_shards_s: {dry:.2f}")
    print(f"output_bytes_per_image: {out_bytes / n:.1f}")
    print(f"projected_400k_minutes: {400_000 / e2e / 60:.1f}")


if __name__ == "__main__":
    main()
