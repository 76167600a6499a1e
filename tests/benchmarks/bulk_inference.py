"""Bulk inference benchmark: prints `name: value` lines (not a timed test; run it by hand).

Makes N FlowCam-like crops by re-encoding the real planktonclas demo images with small random
perturbations, trains a 1-epoch model (accuracy is irrelevant here) for each model preset, then
runs one inference campaign through Snakemake and reports, side by side, end-to-end and
model-only throughput, overhead and peak RSS of a shard job; then the dry-run time for a
400k-image manifest and output bytes per image.

Presets: `default` = config/usecases/flowcam.yaml as shipped (ImageNet-pretrained
EfficientNet-Lite0); `fast` = the speed preset commented in that file (mobilenetv4_conv_small).

    .venv/bin/python tests/benchmarks/bulk_inference.py --n 20000 --scatter 2 [--backend onnx]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from aquaflow.data import inputs  # noqa: E402
from aquaflow.data.fetch import package_root  # noqa: E402
from aquaflow.engine.infer import loader_settings  # noqa: E402
from aquaflow.synthetic.flowcam import perturbed_copies  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake"]
USECASE = REPO / "config/usecases/flowcam.yaml"
CAMPAIGN = "bench"


def speed_preset(path: Path = USECASE) -> dict:
    """The commented `speed preset` block of the FlowCam use case, as {model, training} overrides."""
    lines, inside = [], False
    for line in path.read_text().splitlines():
        if line.startswith("# --- speed preset"):
            inside = True
        elif line.startswith("# --- end of speed preset"):
            break
        elif inside and (lines or line.startswith("# model:")):  # the YAML starts at `model:`
            lines.append(line.removeprefix("#").removeprefix(" "))
    if not lines:
        sys.exit(f"{path}: no '# --- speed preset' block")
    return yaml.safe_load("\n".join(lines))


def snakemake(work: Path, *args: str) -> float:
    t0 = time.perf_counter()
    cmd = [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(work), *args]
    # step scripts import this checkout's library even where another one is installed (-e)
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, env=env)
    if proc.returncode:
        sys.exit(proc.stderr[-4000:])
    return time.perf_counter() - t0


def model_only(model: Path, batch: int, threads: int, backend: str, reps: int = 20) -> float:
    """Forward passes of the same model on uint8 batches already in memory: images/s."""
    import torch

    from aquaflow.backends.torch_model import Predictor

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


def write_config(work: Path, uc: dict) -> None:
    (work / "config/usecases").mkdir(parents=True, exist_ok=True)
    (work / "config/usecases/flowcam.yaml").write_text(yaml.safe_dump(uc, sort_keys=False))
    (work / "config/config.yaml").write_text(
        yaml.safe_dump({"usecases": {"flowcam": "config/usecases/flowcam.yaml"}})
    )


def bench_preset(work: Path, uc: dict, args, threads: int) -> dict:
    """Train 1 epoch, run the campaign, return the figures of one preset."""
    write_config(work, uc)
    common = ["--cores", str(args.cores), "--resources", "gpu=1"]
    snakemake(work, "results/flowcam/model/model.safetensors", *common)
    res = work / "results/flowcam"
    camp = res / "campaigns" / CAMPAIGN
    for old in (camp, res / "benchmarks" / CAMPAIGN):
        shutil.rmtree(old, ignore_errors=True)
    wall = snakemake(
        work,
        f"results/flowcam/campaigns/{CAMPAIGN}/predictions.parquet",
        "--set-scatter",
        f"infer={args.scatter}",
        "--set-threads",
        f"infer_shard={threads}",
        *common,
    )
    bench = pd.concat(
        [
            pd.read_csv(p, sep="\t")
            for p in sorted((res / "benchmarks" / CAMPAIGN / "infer_shard").glob("*.tsv"))
        ]
    )
    summaries = [json.loads(p.read_text()) for p in sorted((camp / "summaries").glob("*.json"))]
    n = sum(s["seen"] for s in summaries)
    e2e = n / sum(s["seconds"] for s in summaries)  # shards run one after another (gpu=1)
    batch, _ = loader_settings(
        {"device": "auto", "batch_size": args.batch_size, "workers": args.workers}, threads
    )
    mo = model_only(res / "model", batch, threads, args.backend)
    card = json.loads((res / "model/model_card.json").read_text())
    return {
        "arch": card["arch"],
        "input_size": card["input_size"],
        "pretrained": bool(card.get("pretrained")),
        "images": n,
        "end_to_end_images_per_s": round(e2e),
        "snakemake_command_images_per_s": round(n / wall),
        "model_only_images_per_s": round(mo),
        "overhead_pct": round(100 * (mo / e2e - 1), 1),
        "peak_rss_shard_mb": round(bench["max_rss"].max()),
        "peak_pss_shard_mb": round(bench["max_pss"].max()),
        "output_bytes_per_image": round((camp / "predictions.parquet").stat().st_size / n, 1),
        "projected_400k_minutes": round(400_000 / e2e / 60, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--scatter", type=int, default=2)
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--backend", default="auto", choices=["auto", "eager", "compile", "onnx"])
    ap.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 64 on CPU")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--presets", default="default,fast", help="comma-separated: default, fast")
    ap.add_argument("--dry-run-items", type=int, default=400_000)
    args = ap.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="aquaflow-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    threads = args.cores

    incoming = work / "incoming"
    if not incoming.exists():
        perturbed_copies(package_root("planktonclas") / "resources" / "demo-images", incoming, args.n, seed=1)
    base = yaml.safe_load(USECASE.read_text())
    base["training"].update({"epochs": 1})
    base["inference"] = {"batch_size": args.batch_size, "backend": args.backend, "workers": args.workers}
    base["campaigns"] = {CAMPAIGN: {"inputs": [{"kind": "folder", "path": str(incoming)}]}}
    fast = speed_preset()
    presets = {}
    for name in args.presets.split(","):
        uc = copy.deepcopy(base)
        if name == "fast":
            uc["model"] = {**uc["model"], **fast["model"]}
            uc["training"] = {**uc["training"], **fast["training"], "epochs": 1}
        elif name != "default":
            sys.exit(f"unknown preset {name!r}: default or fast")
        presets[name] = bench_preset(work / name, uc, args, threads)

    t0 = time.perf_counter()
    listed = inputs.from_folder(incoming, [".jpg"])
    list_s = time.perf_counter() - t0
    # dry-run of a 400k-item manifest campaign with 64 shards
    big = work / "big"
    big.mkdir(exist_ok=True)
    paths = [f"/data/flowcam/{i:07d}.jpg" for i in range(args.dry_run_items)]
    pd.DataFrame({"path": paths}).to_parquet(big / "manifest.parquet")
    uc = copy.deepcopy(base)
    uc["campaigns"] = {
        CAMPAIGN: {"inputs": [{"kind": "manifest", "path": str(big / "manifest.parquet"), "column": "path"}]}
    }
    write_config(big, uc)
    t0 = time.perf_counter()
    table = inputs.build(uc["campaigns"][CAMPAIGN]["inputs"], big)
    manifest_s = time.perf_counter() - t0
    assert len(table) == args.dry_run_items
    dry = snakemake(big, "-n", "--set-scatter", "infer=64", "--cores", str(args.cores))

    batch, workers = loader_settings(
        {"device": "auto", "batch_size": args.batch_size, "workers": args.workers}, threads
    )
    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as fh:
        cpu = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu)
    print(f"date: {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"machine: {platform.node()} {platform.machine()} {cpu}, {os.cpu_count()} cores")
    print(f"backend: {args.backend}  shards: {args.scatter}  batch_size: {batch}  decode_workers: {workers}")
    names = list(presets)
    print(f"{'preset':32s}" + "".join(f"{n:>24s}" for n in names))
    for key in presets[names[0]]:
        print(f"{key:32s}" + "".join(f"{presets[n][key]!s:>24s}" for n in names))
    if {"default", "fast"} <= set(presets):
        d, f = presets["default"], presets["fast"]
        for key in ("end_to_end_images_per_s", "model_only_images_per_s"):
            print(f"fast_over_default_{key.removesuffix('_images_per_s')}: {f[key] / d[key]:.2f}x")
    print(f"list_folder_s: {list_s:.2f} ({len(listed)} files)")
    print(f"manifest_{args.dry_run_items}_read_s: {manifest_s:.2f}")
    print(f"dry_run_{args.dry_run_items}_items_64_shards_s: {dry:.2f}")


if __name__ == "__main__":
    main()
