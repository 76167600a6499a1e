"""Training throughput benchmark: prints `name: value` lines (not a timed test; run it by hand or
from tests/benchmarks/gpu.sh).

Trains the demo's default model (config/usecases/flowcam.yaml: ImageNet EfficientNet-Lite0 at its
input size) with the torch trainer on the real planktonclas demo images repeated to --n items,
from the decode-once cache, for --epochs epochs on --device, and reports the training images/s
of each epoch after the first (the first pays cuDNN autotuning and worker start-up; the
validation pass of each epoch is included) and, on a GPU, its mean utilisation sampled by
nvidia-smi every 200 ms while training.

    .venv/bin/python tests/benchmarks/train_speed.py [--n 20000] [--epochs 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from aquaflow.backends import torch_train  # noqa: E402
from aquaflow.config import validate  # noqa: E402
from aquaflow.data import loader  # noqa: E402
from aquaflow.data.dataset import build_manifest  # noqa: E402
from aquaflow.data.fetch import package_root  # noqa: E402
from tests.benchmarks.loader import print_machine  # noqa: E402


def repeated_manifest(demo: pd.DataFrame, n: int) -> pd.DataFrame:
    """The demo manifest repeated to `n` rows (new ids, same files and splits)."""
    reps = -(-n // len(demo))
    manifest = pd.concat([demo.assign(id=demo["id"] + f"-{r}") for r in range(reps)]).iloc[:n]
    return manifest.reset_index(drop=True)


def gpu_sampler() -> subprocess.Popen | None:
    """nvidia-smi printing the GPU utilisation (%) every 200 ms, or None without a GPU."""
    if not shutil.which("nvidia-smi"):
        return None
    cmd = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    uc = yaml.safe_load((REPO / "config/usecases/flowcam.yaml").read_text())
    cfg = validate(uc, REPO / "workflow/schemas/usecase.schema.yaml", "flowcam")
    train_cfg = {
        **cfg["training"],
        "epochs": a.epochs,
        "batch_size": a.batch,
        "device": a.device,
        "early_stopping": {**cfg["training"]["early_stopping"], "patience": 0},
        "freeze_epochs": 0,
    }
    raw = package_root("planktonclas") / "resources"
    images = raw / cfg["dataset"]["images"]
    demo, _, classes = build_manifest(raw, cfg["dataset"])
    manifest = repeated_manifest(demo, a.n)
    size = cfg["model"]["input_size"]
    n_train = int((manifest["split"] == "train").sum())
    print_machine(a.threads)
    print(f"model: {cfg['model']['arch']} {size} px, batch {a.batch}, amp {train_cfg['amp']}")
    print(f"images: {len(manifest)} ({n_train} train; {len(demo)} demo images repeated)")
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / f"images_{size}px.npy"
        loader.build_cache(manifest, images, size, cache, a.threads)
        sampler = gpu_sampler()
        try:
            result, _ = torch_train.train(
                manifest, images, classes, cfg["model"], train_cfg, a.threads, cache_path=cache
            )
        finally:
            if sampler:
                sampler.terminate()
    seconds = result.history["seconds"].tolist()
    for epoch, s in enumerate(seconds, 1):
        print(f"train_images_per_s (epoch {epoch}): {n_train / s:.0f}")
    steady = seconds[1:] or seconds
    print(f"train_images_per_s (steady): {n_train * len(steady) / sum(steady):.0f}")
    if sampler:
        samples = [int(v) for v in sampler.stdout.read().split() if v.isdigit()]
        busy = [v for v in samples if v > 0] or [0]
        print(f"gpu_utilisation_percent (mean while busy): {sum(busy) / len(busy):.0f}")


if __name__ == "__main__":
    main()
