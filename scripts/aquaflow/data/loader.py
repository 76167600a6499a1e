"""Feeding a model: decode workers from the compute a job was given, and a decode-once image cache.

The cache holds every manifest image letterboxed to the training size as one memory-mapped uint8
array (N x 3 x S x S, manifest order), so epochs read pixels instead of decoding JPEG/PNG/TIFF.
Its sidecar JSON names the manifest hash and size it was built from; a cache of other data or
another size is refused, never silently used.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from aquaflow.data import imaging
from aquaflow.data.dataset import manifest_hash
from aquaflow.io import atomic_path, read_json, write_json

log = logging.getLogger(__name__)


def decode_workers(threads: int, gpu: bool, override: int | None = None) -> int:
    """DataLoader workers for a job given `threads` cores; `override` (a config value) wins.

    GPU: threads - 1 workers decode while the main process feeds the device. CPU: threads // 4,
    since the forward (and backward) pass already uses every core.
    """
    if override is not None:
        return override
    return max(0, threads - 1) if gpu else threads // 4


def chw(image: np.ndarray, size: int) -> torch.Tensor:
    """An HxWx3 uint8 image letterboxed to `size`, as a contiguous uint8 3xSxS tensor."""
    return torch.from_numpy(imaging.letterbox(image, size)).permute(2, 0, 1).contiguous()


class _Decoded(Dataset):
    def __init__(self, root: Path, paths: list[str], size: int):
        self.root, self.paths, self.size = root, paths, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return chw(imaging.load(self.root / self.paths[i]).image, self.size)


def sidecar(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def build_cache(
    manifest: pd.DataFrame,
    images_root: str | Path,
    size: int,
    path: str | Path,
    workers: int = 0,
    progress=None,
) -> dict[str, Any]:
    """Decode every manifest image once into the .npy array at `path` (+ its sidecar JSON)."""
    path = Path(path)
    n = len(manifest)
    loader = DataLoader(
        _Decoded(Path(images_root), manifest["path"].tolist(), size),
        batch_size=64,
        num_workers=workers,
        prefetch_factor=4 if workers else None,
    )
    with atomic_path(path) as tmp:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size))
        at = 0
        for batch in tqdm(loader, file=progress, mininterval=10.0, desc="cache"):
            array[at : at + len(batch)] = batch.numpy()
            at += len(batch)
        array.flush()
        del array
    info = {"manifest_sha256": manifest_hash(manifest), "size": size, "ids": manifest["id"].tolist()}
    write_json(info, sidecar(path))
    log.info("cached %d images at %d px in %s (%.1f MB)", n, size, path, os.path.getsize(path) / 1e6)
    return info


class ImageCache:
    """Rows of a built cache by image id; the array is opened lazily, once per process (workers
    receive the path, not the pixels)."""

    def __init__(self, path: str | Path, manifest: pd.DataFrame, size: int):
        self.path = Path(path)
        info = read_json(sidecar(self.path))
        expected = manifest_hash(manifest)
        if info["manifest_sha256"] != expected or info["size"] != size:
            raise ValueError(
                f"{self.path}: built for manifest {info['manifest_sha256'][:12]} at {info['size']} px, "
                f"not for this manifest ({expected[:12]}) at {size} px: rebuild it"
            )
        self.row = {image_id: i for i, image_id in enumerate(info["ids"])}
        self._array: np.ndarray | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_array": None}

    def __getitem__(self, image_id: str) -> torch.Tensor:
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return torch.from_numpy(np.array(self._array[self.row[image_id]]))


def cache_step(
    *,
    manifest_path: str | Path,
    images_root: str | Path,
    size: int,
    out: str | Path,
    threads: int = 1,
    log_stream=None,
) -> dict[str, Any]:
    """The cache rule: every image of the prepared manifest decoded once at `size`, by `threads`
    decode workers (decoding is all this job does)."""
    manifest = pd.read_parquet(manifest_path)
    workers = threads if threads > 1 else 0
    return build_cache(manifest, images_root, size, out, workers, log_stream)
