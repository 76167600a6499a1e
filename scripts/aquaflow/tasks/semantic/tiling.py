"""Tiled prediction of rasters of any size in constant memory, overlapping tiles blended.

Tiles sit on one global grid (origins every `tile - overlap` pixels, the last flush with the
raster's edge). Each tile's class probabilities are weighted by a ramp that is 0 for `margin`
pixels at a tile side inside the raster, rises as a raised cosine across the rest of the overlap
and is 1 elsewhere (sides on the raster's edge are not ramped); the output is the weighted mean.
A model whose receptive field is no wider than `margin` therefore gives exactly its whole-image
prediction, and a real model no seams. Output blocks of `block` pixels are produced one at a
time from the tiles that touch them (a tile across a block border is predicted for each block),
so memory depends on tile, block and batch sizes, never on the raster's size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from aquaflow.data.rasters import starts

# Reads a window (row, col, height, width) -> (bands C x h x w float32, valid h x w bool).
Reader = Callable[[int, int, int, int], tuple[np.ndarray, np.ndarray]]
# A batch N x C x tile x tile -> class probabilities N x K x tile x tile.
PredictFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Tiling:
    tile: int = 256
    overlap: int = 64
    block: int = 1024  # output block side (rounded up to a multiple of the stride)
    batch: int = 4

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def margin(self) -> int:
        return self.overlap // 4


def ramp(n: int, overlap: int, margin: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1-D blending weight of a tile side of n pixels (see the module docstring)."""
    d = np.arange(n, dtype=np.float64)
    width = max(overlap - 2 * margin, 1)

    def side(dist: np.ndarray) -> np.ndarray:
        x = np.clip((dist - margin + 0.5) / width, 0.0, 1.0)
        return np.where(dist < margin, 0.0, 0.5 - 0.5 * np.cos(np.pi * x))

    w = np.ones(n)
    if ramp_start:
        w = np.minimum(w, side(d))
    if ramp_end:
        w = np.minimum(w, side(n - 1 - d))
    return w


def _axis_tiles(n: int, t: Tiling, lo: int, hi: int) -> list[int]:
    return [o for o in starts(n, t.tile, t.stride) if o < hi and o + t.tile > lo]


def predict_blocks(
    read: Reader, height: int, width: int, predict: PredictFn, tiling: Tiling
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """(row, col, probabilities K x h x w float32, valid h x w) for each output block, row by row;
    invalid pixels have probability 0 in every class."""
    t = tiling
    block = -(-max(t.block, t.stride) // t.stride) * t.stride
    rows_all, cols_all = starts(height, t.tile, t.stride), starts(width, t.tile, t.stride)
    for br in range(0, height, block):
        bh = min(block, height - br)
        for bc in range(0, width, block):
            bw = min(block, width - bc)
            acc: np.ndarray | None = None
            weight = np.zeros((bh, bw))
            valid = np.zeros((bh, bw), bool)
            origins = [
                (r, c)
                for r in _axis_tiles(height, t, br, br + bh)
                for c in _axis_tiles(width, t, bc, bc + bw)
            ]
            for i in range(0, len(origins), t.batch):
                chunk = origins[i : i + t.batch]
                reads = [read(r, c, t.tile, t.tile) for r, c in chunk]
                probs = predict(np.stack([x for x, _ in reads]))
                if acc is None:
                    acc = np.zeros((probs.shape[1], bh, bw))
                for (r, c), (_, ok), p in zip(chunk, reads, probs, strict=True):
                    wr = ramp(t.tile, t.overlap, t.margin, r > rows_all[0], r < rows_all[-1])
                    wc = ramp(t.tile, t.overlap, t.margin, c > cols_all[0], c < cols_all[-1])
                    # the part of this tile inside the block (tile and block coordinates)
                    r0, r1 = max(r, br), min(r + t.tile, br + bh, height)
                    c0, c1 = max(c, bc), min(c + t.tile, bc + bw, width)
                    ts = np.s_[r0 - r : r1 - r, c0 - c : c1 - c]
                    bs = np.s_[r0 - br : r1 - br, c0 - bc : c1 - bc]
                    w = np.outer(wr, wc)[ts]
                    acc[(slice(None), *bs)] += p[(slice(None), *ts)] * w
                    weight[bs] += w
                    valid[bs] |= ok[ts]
            assert acc is not None
            out = (acc / np.maximum(weight, 1e-12)).astype(np.float32)
            out[:, ~valid] = 0.0
            yield br, bc, out, valid
