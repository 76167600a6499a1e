"""Patchify an image into (overlapping) tiles and stitch per-pixel outputs back.

Tiles of side `tile` step by `tile - overlap`; the image is padded at the bottom and right so the
grid covers every pixel (unlike the published litter module, which drops the edge pixels). Tile
coordinates are (x, y) of the tile's top-left corner in the original image; tiles that reach into
the padding say so with their width/height inside the image (`w`, `h`).
`unpatchify` averages overlapping tiles; on an identity round trip it returns the input exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

PAD_MODES = ("constant", "reflect", "edge")


def grid(height: int, width: int, tile: int, overlap: int = 0) -> pd.DataFrame:
    """Tile coordinates: columns row, col, x, y, w, h (w/h = part inside the image)."""
    if tile < 1 or not 0 <= overlap < tile:
        raise ValueError(f"need tile >= 1 and 0 <= overlap < tile (tile={tile}, overlap={overlap})")
    stride = tile - overlap
    ny = max(1, math.ceil((height - overlap) / stride)) if height > tile else 1
    nx = max(1, math.ceil((width - overlap) / stride)) if width > tile else 1
    rows = []
    for r in range(ny):
        for c in range(nx):
            x, y = c * stride, r * stride
            rows.append((r, c, x, y, min(tile, width - x), min(tile, height - y)))
    return pd.DataFrame(rows, columns=["row", "col", "x", "y", "w", "h"])


def padded_shape(height: int, width: int, tile: int, overlap: int = 0) -> tuple[int, int]:
    g = grid(height, width, tile, overlap)
    return int(g["y"].max()) + tile, int(g["x"].max()) + tile


def patchify(
    image: np.ndarray, tile: int, overlap: int = 0, pad_mode: str = "constant", pad_value: float = 0
) -> tuple[np.ndarray, pd.DataFrame]:
    """Split an (H, W[, C]) image into tiles: (N, tile, tile[, C]) array and the tile table."""
    if pad_mode not in PAD_MODES:
        raise ValueError(f"pad_mode must be one of {PAD_MODES}")
    h, w = image.shape[:2]
    coords = grid(h, w, tile, overlap)
    ph, pw = padded_shape(h, w, tile, overlap)
    pad = [(0, ph - h), (0, pw - w)] + [(0, 0)] * (image.ndim - 2)
    kw = {"constant_values": pad_value} if pad_mode == "constant" else {}
    padded = np.pad(image, pad, mode=pad_mode, **kw) if (ph, pw) != (h, w) else image
    tiles = np.stack(
        [padded[y : y + tile, x : x + tile] for x, y in zip(coords["x"], coords["y"], strict=True)]
    )
    return tiles, coords


def unpatchify(tiles: np.ndarray, coords: pd.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    """Stitch (N, t, t[, C]) per-pixel outputs into an image of `shape` (H, W); overlaps averaged.

    Integer inputs come back in their dtype (rounded mean); floats as float (mean in float64).
    """
    _n, t = tiles.shape[:2]
    h, w = shape
    ph = max(h, int(coords["y"].max()) + t)
    pw = max(w, int(coords["x"].max()) + t)
    extra = tiles.shape[3:]
    acc = np.zeros((ph, pw, *extra), np.float64)
    cnt = np.zeros((ph, pw), np.int32)
    for tile, x, y in zip(tiles, coords["x"], coords["y"], strict=True):
        acc[y : y + t, x : x + t] += tile
        cnt[y : y + t, x : x + t] += 1
    cnt = cnt.reshape(cnt.shape + (1,) * len(extra))
    out = (acc / np.maximum(cnt, 1))[:h, :w]
    if np.issubdtype(tiles.dtype, np.integer) or tiles.dtype == bool:
        return np.rint(out).astype(tiles.dtype)
    return out.astype(tiles.dtype)
