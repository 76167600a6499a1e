"""Training loader benchmark: prints `name: value` lines (not a timed test; run it by hand).

Feeds the training loader (LabelledImages + the default augmentation, batches of 64) with the
real planktonclas demo images repeated to --n items at --size px and reports images/s for:
decoding with 0 workers, decoding with N workers, and the decode-once cache (0 and N workers);
then the CPU cores one GPU needs at 11,000 images/s (one H100 training an EfficientNet-class
model, measured for this project) for each, from the single-process rate (one core).

    .venv/bin/python tests/benchmarks/loader.py [--n 3000] [--size 128] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from aquaflow.backends.torch_train import LabelledImages, _worker_init  # noqa: E402
from aquaflow.data import augment, loader  # noqa: E402
from aquaflow.data.dataset import build_manifest  # noqa: E402
from aquaflow.data.fetch import package_root  # noqa: E402
from tests.unit.test_dataset import FLOWCAM  # noqa: E402

GPU_RATE = 11_000  # images/s of one H100 training an EfficientNet-class model


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next(
        (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")),
        platform.processor(),
    )


def print_machine(threads: int | None = None) -> None:
    """The `cpu:` and `date:` lines every benchmark starts with (figures are quoted with both)."""
    extra = f", threads {threads}" if threads else ""
    print(f"cpu: {cpu_name()} ({os.cpu_count()} cores){extra}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def rate(dataset: LabelledImages, workers: int, batch: int) -> float:
    """Images/s of one pass (after the first batch: worker start-up is not a steady cost)."""
    it = iter(
        DataLoader(
            dataset,
            batch_size=batch,
            shuffle=True,
            num_workers=workers,
            worker_init_fn=_worker_init,
            prefetch_factor=4 if workers else None,
            generator=torch.Generator().manual_seed(0),
        )
    )
    next(it)
    t0, seen = time.perf_counter(), 0
    for x, _ in it:
        seen += len(x)
    return seen / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(1)
    raw = package_root("planktonclas") / "resources"
    images = raw / FLOWCAM["images"]
    demo, _, _ = build_manifest(raw, FLOWCAM)
    reps = -(-a.n // len(demo))
    manifest = pd.concat([demo.assign(id=demo["id"] + f"-{r}") for r in range(reps)]).iloc[: a.n]
    manifest = manifest.reset_index(drop=True)
    transform = augment.build(["hflip", "vflip", "rot90", "scale_crop", "brightness_contrast"], a.size)
    labels = [0] * len(manifest)
    print_machine()
    print(f"load_average_before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"images: {len(manifest)} ({len(demo)} demo images repeated), size {a.size}, batch {a.batch}")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"images_{a.size}px.npy"
        t0 = time.perf_counter()
        loader.build_cache(manifest, images, a.size, path, a.workers)
        built = len(manifest) / (time.perf_counter() - t0)
        print(f"cache_build_images_per_s ({a.workers} workers): {built:.0f}")
        print(f"cache_bytes_per_image: {path.stat().st_size / len(manifest):.0f}")
        cache = loader.ImageCache(path, manifest, a.size)
        decoded = LabelledImages(images, manifest, labels, a.size, transform)
        cached = LabelledImages(images, manifest, labels, a.size, transform, cache)
        rates = {}
        for name, ds, workers in (
            ("decode", decoded, 0),
            ("decode", decoded, a.workers),
            ("cache", cached, 0),
            ("cache", cached, a.workers),
        ):
            rates[name, workers] = r = rate(ds, workers, a.batch)
            print(f"loader_images_per_s ({name}, {workers} workers): {r:.0f}")
        for name in ("decode", "cache"):
            per_core = rates[name, 0]
            print(f"cores_per_gpu_at_{GPU_RATE}_img_s ({name}): {GPU_RATE / per_core:.0f}")
        aug_free = LabelledImages(images, manifest, labels, a.size, None, cache)
        print(f"loader_images_per_s (cache, no augmentation, 0 workers): {rate(aug_free, 0, a.batch):.0f}")
    print(f"load_average_after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
