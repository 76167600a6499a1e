"""Decoding for every task's shards: inputs-table rows -> decoded arrays or rejection records.

`Items` (a map-style dataset for torch's DataLoader) reads each row's file (or its crop box from a
collage), decodes it with the rejection reasons of `aquaflow.data.imaging`, and resizes it the way
the model card says (or keeps full resolution for detection); `prefetched` decodes the next batch in
a background thread.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from aquaflow.data import imaging
from aquaflow.monitoring import drift

CROP_COLUMNS = ("crop_x", "crop_y", "crop_w", "crop_h")


def crop_of(row: dict[str, Any]) -> tuple[int, int, int, int] | None:
    """The crop box of a row, or None for a whole-image row (no crop columns, or NaN: a row of a
    folder input concatenated with a FlowCam one). A crop row's box is returned as it is, even
    when missing (-1) or empty: Items rejects it as bad_crop_box rather than predict the collage."""
    if "crop_x" not in row or any(row[c] is None or pd.isna(row[c]) for c in CROP_COLUMNS):
        return None
    return tuple(int(row[c]) for c in CROP_COLUMNS)  # type: ignore[return-value]


class Items:
    """Rows of an inputs table -> decoded uint8 arrays (resized as the model card says, or at full
    resolution when `size` is None) with their image statistics, or rejection records.

    `sources` are paths as str, or bytes for file names that are not valid UTF-8 (see
    aquaflow.data.inputs.source_paths).
    """

    def __init__(
        self,
        sources: list[str | bytes],
        crops: list[tuple | None],
        size: int | None,
        max_pixels: int,
        resize: str = "letterbox",
    ):
        self.sources, self.crops = sources, crops
        self.size, self.max_pixels = size, max_pixels
        # the model card's `resize`: letterbox (ours), stretch (e.g. planktonclas Keras models) or
        # center_crop (Ultralytics classification models)
        if resize not in imaging.RESIZE:
            raise ValueError(f"model card key 'resize': {resize!r} is not one of {sorted(imaging.RESIZE)}")
        self.resize = imaging.RESIZE[resize]
        self.draft = size if resize == "letterbox" else None  # exact pixels for the other modes
        self._collage: tuple[str | bytes, np.ndarray | imaging.Rejected] | None = None

    def __len__(self) -> int:
        return len(self.sources)

    def _whole(self, src: str | bytes) -> tuple[np.ndarray, str]:
        data = imaging.read_bytes(src)
        dec = imaging.decode(data, self.max_pixels, draft=self.draft)
        self._size = (dec.width, dec.height)  # for the image statistics: size before draft scaling
        return dec.image, hashlib.sha256(data).hexdigest()

    def _crop(self, src: str | bytes, box: tuple[int, int, int, int]) -> tuple[np.ndarray, str]:
        x, y, w, h = box
        if x < 0 or y < 0 or w <= 0 or h <= 0:
            raise imaging.Rejected(imaging.BAD_CROP_BOX, f"crop box {box} is missing or empty")
        if self._collage is None or self._collage[0] != src:  # rows of a collage are contiguous
            try:
                img: np.ndarray | imaging.Rejected = imaging.load(src, self.max_pixels).image
            except imaging.Rejected as rej:
                img = rej
            self._collage = (src, img)
        img = self._collage[1]
        if isinstance(img, imaging.Rejected):
            raise img
        H, W = img.shape[:2]
        if x + w > W or y + h > H:
            raise imaging.Rejected(imaging.BAD_CROP_BOX, f"crop {box} outside collage of size {W}x{H}")
        crop = np.ascontiguousarray(img[y : y + h, x : x + w])
        digest = hashlib.sha256(f"{h}x{w}:".encode() + crop.tobytes()).hexdigest()
        return crop, digest

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str, str, str]:
        src, box = self.sources[i], self.crops[i]
        try:
            self._size = None
            if isinstance(src, imaging.Rejected):  # found while staging (aquaflow.engine.staging)
                raise src
            img, digest = self._crop(src, box) if box else self._whole(src)
            # statistics of the decoded image (drift monitoring), before resizing
            stats = drift.image_stats(img, *(self._size or (img.shape[1], img.shape[0])))
            out = img if self.size is None else self.resize(img, self.size)
            return i, out, digest[:16], "", "", stats
        except imaging.Rejected as rej:
            return i, None, "", rej.reason, rej.detail, None
        except Exception as exc:  # a shard never crashes on one bad file
            return i, None, "", imaging.DECODE_ERROR, f"{type(exc).__name__}: {exc}", None


def collate(batch: list, stack: bool = True) -> dict[str, Any]:
    """A batch of Items: decoded images as one uint8 NCHW tensor (`stack`, same-sized images) or a
    list of HWC arrays (full-resolution frames), their row indices, ids, statistics, rejections."""
    ok = [b for b in batch if b[1] is not None]
    if stack:
        import torch  # here, not at import: the gather and staging steps need none of torch

        arrays = np.stack([b[1] for b in ok]) if ok else np.zeros((0, 1, 1, 3), np.uint8)
        images: Any = torch.from_numpy(arrays).permute(0, 3, 1, 2)
    else:
        images = [b[1] for b in ok]
    return {
        "index": np.array([b[0] for b in ok], dtype=np.int64),
        "ids": [b[2] for b in ok],
        "images": images,
        "rejected": [(b[0], b[3], b[4]) for b in batch if b[1] is None],
        # one row of image statistics per decoded item (drift monitoring)
        "stats": np.stack([b[5] for b in ok]) if ok else np.zeros((0, len(drift.STATS)), np.float32),
    }


REJECTED_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64()),
        pa.field("source", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("detail", pa.string()),
    ]
)


def prefetched(iterable, depth: int = 2):
    """Iterate in a background thread, `depth` items ahead: without worker processes, the next
    batch is decoded while the current one is in the (GIL-releasing) forward pass."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()

    def produce() -> None:
        try:
            for item in iterable:
                q.put(item)
        except BaseException as exc:  # re-raised in the consumer
            q.put(exc)
        q.put(done)

    threading.Thread(target=produce, daemon=True).start()
    while (item := q.get()) is not done:
        if isinstance(item, BaseException):
            raise item
        yield item


def shard_slice(n_rows: int, scatteritem: str) -> slice:
    """Contiguous rows of shard 'i-of-n' (Snakemake scatteritem), balanced to +-1 row."""
    i, n = (int(v) for v in scatteritem.split("-of-"))
    if not 1 <= i <= n:
        raise ValueError(f"bad scatter item {scatteritem!r}")
    return slice(n_rows * (i - 1) // n, n_rows * i // n)
