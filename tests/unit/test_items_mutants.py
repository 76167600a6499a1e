"""The decoding Dataset of every shard, pinned down: crop boxes and their edges, the collage cache,
ids, image statistics at the original size, resize modes, collate, the prefetching thread and the
shard slices."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from aquaflow.data import imaging
from aquaflow.engine import items
from aquaflow.engine.items import Items, collate, crop_of, prefetched, shard_slice


def _collage(tmp_path, w=40, h=30):
    img = np.arange(h * w * 3, dtype=np.uint32).reshape(h, w, 3).astype(np.uint8)
    path = tmp_path / "collage.png"
    path.write_bytes(imaging.encode(img))
    return str(path), img


def test_crop_of_rows():
    assert crop_of({"source": "a.png"}) is None
    assert crop_of({"crop_x": 1.0, "crop_y": 2, "crop_w": 3, "crop_h": 4}) == (1, 2, 3, 4)
    assert crop_of({"crop_x": -1, "crop_y": -1, "crop_w": -1, "crop_h": -1}) == (-1, -1, -1, -1)
    for missing in ("crop_x", "crop_h"):
        row = {"crop_x": 1, "crop_y": 2, "crop_w": 3, "crop_h": 4}
        assert crop_of({**row, missing: float("nan")}) is None
        assert crop_of({**row, missing: None}) is None


def test_crops_inside_the_collage_up_to_its_edges_and_their_ids(tmp_path):
    src, img = _collage(tmp_path)
    boxes = [(0, 0, 40, 30), (38, 27, 2, 3), (5, 6, 1, 1)]
    ds = Items([src] * 3, boxes, None, 10**6)
    for i, (x, y, w, h) in enumerate(boxes):
        index, out, digest, reason, detail, stats = ds[i]
        crop = img[y : y + h, x : x + w]
        assert index == i and (reason, detail) == ("", "") and np.array_equal(out, crop)
        assert digest == hashlib.sha256(f"{h}x{w}:".encode() + crop.tobytes()).hexdigest()[:16]
        assert stats[0] == pytest.approx(math.sqrt(w * h)) and stats[1] == pytest.approx(w / h)


@pytest.mark.parametrize(
    "box",
    [
        (-1, 0, 2, 2),
        (0, -1, 2, 2),
        (0, 0, 0, 2),
        (0, 0, 2, 0),
        (39, 0, 2, 2),
        (0, 29, 2, 2),
        (-1, -1, -1, -1),
    ],
)
def test_bad_crop_boxes_are_rejected(tmp_path, box):
    src, _ = _collage(tmp_path)
    index, out, digest, reason, detail, stats = Items([src], [box], None, 10**6)[0]
    assert (index, out, digest, reason, stats) == (0, None, "", imaging.BAD_CROP_BOX, None)
    assert str(box) in detail


def test_a_broken_collage_rejects_each_of_its_crops_and_the_next_collage_is_read(tmp_path):
    src, img = _collage(tmp_path)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"")
    ds = Items([str(broken), str(broken), src], [(0, 0, 2, 2), (2, 2, 2, 2), (1, 1, 2, 2)], None, 10**6)
    assert [ds[i][3] for i in range(3)] == [imaging.ZERO_BYTES, imaging.ZERO_BYTES, ""]
    assert np.array_equal(ds[2][1], img[1:3, 1:3])
    assert Items([src], [(0, 0, 2, 2)], None, 40 * 30 - 1)[0][3] == imaging.TOO_LARGE  # the collage's size


def test_whole_images_resized_as_the_card_says_with_statistics_of_the_original(tmp_path):
    big = np.zeros((200, 400, 3), np.uint8)
    big[50:150, 100:300] = 200
    path = tmp_path / "big.jpg"
    path.write_bytes(imaging.encode(big, ".jpg"))
    data = path.read_bytes()
    for resize, fn in imaging.RESIZE.items():
        _index, out, digest, reason, _, stats = Items([str(path)], [None], 32, 10**8, resize)[0]
        assert reason == "" and out.shape == (32, 32, 3) and digest == hashlib.sha256(data).hexdigest()[:16]
        assert stats[0] == pytest.approx(math.sqrt(400 * 200)) and stats[1] == pytest.approx(2.0)
        if resize != "letterbox":  # exact pixels: decoded whole, then resized
            assert np.array_equal(out, fn(imaging.decode(data).image, 32))
    assert Items([str(path)], [None], 32, 10**8).draft == 32
    assert Items([str(path)], [None], 32, 10**8, "stretch").draft is None
    drafted = Items([str(path)], [None], 32, 10**8)[0][1]  # decoded at 1/4 scale, then letterboxed
    assert np.array_equal(drafted, imaging.letterbox(imaging.decode(data, draft=32).image, 32))
    assert not np.array_equal(drafted, imaging.letterbox(imaging.decode(data).image, 32))
    assert Items([str(path)], [None], 32, 400 * 200 - 1)[0][3] == imaging.TOO_LARGE
    full = Items([str(path)], [None], None, 10**8)[0][1]
    assert full.shape == (200, 400, 3)
    with pytest.raises(ValueError, match=r"^model card key 'resize': 'crop' is not one of \['center_crop', "):
        Items([str(path)], [None], 32, 10**8, "crop")


def test_rejections_of_staging_decoding_and_any_other_error(tmp_path):
    staged = imaging.Rejected(imaging.MISSING, "gone while staging")
    ds = Items([staged, str(tmp_path / "none.png"), 12345], [None, None, None], None, 10**6)
    assert len(ds) == 3
    assert ds[0] == (0, None, "", imaging.MISSING, "gone while staging", None)
    assert ds[1][3] == imaging.MISSING
    i, out, digest, reason, detail, stats = ds[2]  # not a path at all: a decode error, not a crash
    assert (i, out, digest, reason, stats) == (2, None, "", imaging.DECODE_ERROR, None) and detail.startswith(
        "TypeError: "
    )


def test_collate_stacks_or_lists_and_keeps_rejections_in_order():
    a = np.full((2, 3, 3), 1, np.uint8)
    b = np.full((2, 3, 3), 2, np.uint8)
    stats = np.ones(len(items.drift.STATS), np.float32)
    batch = [
        (4, a, "ia", "", "", stats),
        (5, None, "", "missing", "m", None),
        (6, b, "ib", "", "", stats * 2),
    ]
    out = collate(batch)
    assert out["index"].tolist() == [4, 6] and out["index"].dtype == np.int64 and out["ids"] == ["ia", "ib"]
    assert isinstance(out["images"], torch.Tensor) and tuple(out["images"].shape) == (2, 3, 2, 3)
    assert out["images"][1, 0, 0, 0].item() == 2
    assert out["rejected"] == [(5, "missing", "m")] and out["stats"][:, 0].tolist() == [1, 2]
    listed = collate(batch, stack=False)
    assert [x.shape for x in listed["images"]] == [(2, 3, 3), (2, 3, 3)]
    empty = collate([(0, None, "", "missing", "m", None)])
    assert tuple(empty["images"].shape) == (0, 3, 1, 1) and empty["index"].dtype == np.int64
    assert empty["images"].dtype == torch.uint8 and empty["stats"].dtype == np.float32
    assert empty["stats"].shape == (0, len(items.drift.STATS)) and empty["rejected"] == [(0, "missing", "m")]


def test_prefetched_yields_everything_in_order_and_reraises():
    assert list(prefetched(iter(range(7)), depth=1)) == list(range(7))
    assert list(prefetched([])) == []
    assert list(prefetched([1, None, 2])) == [1, None, 2]  # None is an item, not the end

    def failing():
        yield 1
        raise OSError("disk gone")

    got = []
    with pytest.raises(OSError, match="disk gone"):
        for v in prefetched(failing()):
            got.append(v)
    assert got == [1]


def test_shard_slices():
    assert [shard_slice(10, f"{i}-of-3") for i in (1, 2, 3)] == [slice(0, 3), slice(3, 6), slice(6, 10)]
    assert shard_slice(5, "1-of-1") == slice(0, 5)
    for bad in ("0-of-3", "4-of-3"):
        with pytest.raises(ValueError, match=f"^bad scatter item '{bad}'$"):
            shard_slice(10, bad)
