"""Patchify/unpatchify round trips and near-duplicate removal."""

from __future__ import annotations

import numpy as np
import pytest

from aquaflow.preprocess import dedup, tiles


@pytest.mark.parametrize(
    ("shape", "tile", "overlap"),
    [
        ((256, 384), 128, 0),
        ((300, 410), 128, 0),
        ((300, 410, 3), 128, 32),
        ((50, 70), 128, 0),
        ((257, 129), 64, 63),
    ],
)
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_round_trip_is_exact(shape, tile, overlap, dtype):
    rng = np.random.default_rng(0)
    img = (rng.random(shape) * 250).astype(dtype)
    t, coords = tiles.patchify(img, tile, overlap, pad_mode="reflect")
    assert t.shape[1:3] == (tile, tile) and len(t) == len(coords)
    # every pixel is covered, coordinates are in the original image frame
    assert coords["x"].min() == 0 and coords["y"].min() == 0
    assert (coords["x"] + coords["w"]).max() == shape[1] and (coords["y"] + coords["h"]).max() == shape[0]
    back = tiles.unpatchify(t, coords, shape[:2])
    assert back.dtype == img.dtype and np.array_equal(back, img)


def test_tiles_hold_the_right_pixels_and_overlaps_are_averaged():
    img = np.arange(100 * 100, dtype=np.float64).reshape(100, 100)
    t, coords = tiles.patchify(img, 40, 10)
    for k, r in coords.iterrows():
        assert np.array_equal(
            t[k][: r["h"], : r["w"]], img[r["y"] : r["y"] + r["h"], r["x"] : r["x"] + r["w"]]
        )
    ones = np.ones_like(t)
    ones[0] = 3.0  # first tile says 3, its neighbours say 1: overlap pixels average to 2
    out = tiles.unpatchify(ones, coords, img.shape)
    assert out[0, 0] == 3.0 and out[0, 35] == 2.0 and out[0, 50] == 1.0


def test_grid_is_not_truncated():
    """The published litter module dropped edge pixels; here the grid covers them."""
    g = tiles.grid(300, 300, 128)
    assert len(g) == 9 and g["w"].tolist()[-1] == 44
    with pytest.raises(ValueError):
        tiles.grid(10, 10, 8, overlap=8)


def test_dedup_drops_injected_near_duplicates_and_keeps_distinct_frames():
    rng = np.random.default_rng(5)
    distinct = []
    for _ in range(8):  # distinct scenes: smoothed random fields
        f = rng.random((12, 16))
        distinct.append((np.kron(f, np.ones((8, 8))) * 255).astype(np.uint8))
    frames, expect = [], []
    for f in distinct:
        frames.append(f)
        expect.append(True)
        for _ in range(2):  # near-duplicates: sensor noise and a 1-px shift
            d = np.roll(f, 1, axis=1).astype(np.int16) + rng.integers(-4, 5, f.shape)
            frames.append(np.clip(d, 0, 255).astype(np.uint8))
            expect.append(False)
    decisions = dedup.near_duplicates(frames, threshold=8)
    assert [d.keep for d in decisions] == expect
    dropped = [d for d in decisions if not d.keep]
    assert all(d.duplicate_of == 3 * (d.index // 3) for d in dropped)
    # threshold 0 keeps everything that is not bit-identical in hash terms
    assert sum(d.keep for d in dedup.near_duplicates(distinct, threshold=0)) == len(distinct)
