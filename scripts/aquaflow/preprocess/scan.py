"""Whole-scan processing in horizontal strips, so memory depends on the strip, not the scan.

A ZooScan scan is hundreds of megapixels (356 MP at 2400 dpi). `process_scan` reads the scan and
its blank(s) strip by strip (uncompressed TIFFs are read straight from the file at the strip's
offset, TIFFs compressed in strips decode only the strips a range needs; anything else is decoded
once, after its header showed it fits in limits.MAX_WHOLE_SCAN_BYTES), subtracts the background,
segments, measures and cuts vignettes. Each strip is read with a margin above and below; an object
belongs to the strip that holds its top row, so an object up to `margin` px tall is seen whole
exactly once. Taller objects would be cut by the margin: they are counted (`truncated`) and
dropped, never measured wrongly.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import tifffile
from PIL import Image

from aquaflow.data import limits
from aquaflow.preprocess import background as bgmod
from aquaflow.preprocess import segment as seg

log = logging.getLogger(__name__)


class StripReader:
    """Row ranges of a single-page grayscale scan, read without decoding the whole image where the
    file allows it: an uncompressed TIFF straight from its bytes, a TIFF compressed in several
    strips one strip at a time (tifffile decodes each). Anything else (one compressed strip, tiles,
    PNG/JPEG...) is decoded whole, and only if its header says that fits in `max_whole_bytes`."""

    def __init__(self, path: str | Path, max_whole_bytes: int | None = None):
        max_whole_bytes = limits.MAX_WHOLE_SCAN_BYTES if max_whole_bytes is None else max_whole_bytes
        self.path = Path(path)
        self._array: np.ndarray | None = None
        self._offset: int | None = None
        self._strip_rows: int | None = None  # rows per strip when decoded strip by strip
        need = 0
        if self.path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(self.path) as tf:
                page = tf.pages.first
                self.shape = tuple(page.shape)
                self.dtype = np.dtype(page.dtype)
                if page.is_contiguous and page.compression == 1 and page.fillorder == 1:
                    self._offset = int(page.dataoffsets[0])
                elif not page.is_tiled and len(page.dataoffsets) > 1 and len(self.shape) == 2:
                    self._strip_rows = int(page.rowsperstrip)
                need = int(np.prod(self.shape)) * self.dtype.itemsize
        else:
            need = self._header()
        if len(self.shape) != 2:
            raise ValueError(f"{self.path}: grayscale scans only, got shape {self.shape}")
        if self._offset is None and self._strip_rows is None and need > max_whole_bytes:
            raise ValueError(
                f"{self.path}: a {self.width}x{self.height} scan that can only be decoded whole (not a "
                f"TIFF, or compressed as one strip or in tiles) would need {need} bytes, more than "
                f"{max_whole_bytes} (limits.max_whole_scan_mb): save it as an "
                "uncompressed TIFF or a TIFF compressed in strips (e.g. rowsperstrip=256)"
            )
        bgmod.white_of(self.dtype)
        # byte order of uncompressed TIFF data as written by tifffile/libtiff (file byte order)
        self._file_dtype = self.dtype
        if self._offset is not None and self.dtype.itemsize > 1:
            with tifffile.TiffFile(self.path) as tf:
                self._file_dtype = self.dtype.newbyteorder(tf.byteorder)

    def _header(self) -> int:
        """Shape and dtype of a non-TIFF scan from its header (Pillow, nothing decoded); returns the
        bytes OpenCV needs to decode it and convert it to grey."""
        try:
            with Image.open(self.path) as im:
                w, h, bands, mode = im.width, im.height, len(im.getbands()), im.mode
        except Image.DecompressionBombError as exc:
            raise ValueError(f"{self.path}: refused by Pillow's decompression-bomb guard: {exc}") from exc
        except (OSError, ValueError) as exc:
            raise ValueError(f"{self.path}: cannot read image ({exc})") from exc
        self.shape, self.dtype = (h, w), np.dtype(np.uint16 if mode.startswith("I;16") else np.uint8)
        return h * w * self.dtype.itemsize * (bands + 1)

    def _load(self) -> np.ndarray:
        if self._array is None:
            if self.path.suffix.lower() in (".tif", ".tiff"):
                arr = tifffile.imread(self.path)
            else:
                arr = cv2.imread(str(self.path), cv2.IMREAD_UNCHANGED)
                if arr is None:
                    raise ValueError(f"{self.path}: cannot read image")
                if arr.ndim == 3:
                    arr = cv2.cvtColor(arr, cv2.COLOR_BGR2GRAY)
            self._array = arr
            self.shape, self.dtype = tuple(arr.shape), arr.dtype
        return self._array

    def _strips(self, y0: int, y1: int) -> np.ndarray:
        """Rows y0..y1-1 of a TIFF compressed in strips, decoding only the strips they lie in."""
        out = np.empty((y1 - y0, self.width), self.dtype)
        rps = self._strip_rows or 1
        with tifffile.TiffFile(self.path) as tf:
            page, fh = tf.pages.first, tf.filehandle
            for i in range(y0 // rps, (y1 - 1) // rps + 1):
                fh.seek(page.dataoffsets[i])
                segment, _, _ = page.decode(fh.read(page.databytecounts[i]), i, jpegtables=page.jpegtables)
                segment = segment.reshape(-1, self.width)
                top = i * rps
                a, b = max(y0, top), min(y1, top + segment.shape[0])
                out[a - y0 : b - y0] = segment[a - top : b - top]
        return out

    @property
    def height(self) -> int:
        return int(self.shape[0])

    @property
    def width(self) -> int:
        return int(self.shape[1])

    def rows(self, y0: int, y1: int) -> np.ndarray:
        """Rows y0..y1-1 as a fresh array of the scan dtype."""
        if self._strip_rows is not None:
            return self._strips(y0, y1)
        if self._offset is None:
            return np.array(self._load()[y0:y1])
        w, item = self.width, self.dtype.itemsize
        arr = np.fromfile(
            self.path, dtype=self._file_dtype, count=(y1 - y0) * w, offset=self._offset + y0 * w * item
        )
        return arr.reshape(y1 - y0, w).astype(self.dtype, copy=False)


@dataclass
class ScanResult:
    objects: pd.DataFrame  # features (segment.FEATURES + PIXEL_COLUMNS), scan coordinates
    threshold: int
    truncated: int  # objects taller than the margin (dropped)
    border: int  # objects touching the scan border (dropped unless keep_border)
    previews: dict[str, np.ndarray] = field(default_factory=dict)  # down-scaled before/after


def _preview_rows(block: np.ndarray, factor: int) -> np.ndarray:
    h, w = block.shape
    out_h, out_w = max(1, round(h / factor)), max(1, w // factor)
    return cv2.resize(seg.to_uint8(block), (out_w, out_h), interpolation=cv2.INTER_AREA)


def process_scan(
    scan_path: str | Path,
    blank_paths: Sequence[str | Path],
    params: seg.SegmentParams,
    *,
    method: str = "difference",
    flat_path: str | Path | None = None,
    strip_rows: int = 1024,
    max_object_px: int = 512,
    padding: int = 8,
    on_object: Callable[[dict, np.ndarray, np.ndarray], None] | None = None,
    preview_side: int = 0,
) -> ScanResult:
    """Background-subtract, segment and measure one scan strip by strip.

    on_object(row, vignette, mask) is called once per kept object with its feature row, its 8-bit
    vignette (background-subtracted, `padding` px around the bounding box) and the object's own
    mask on the vignette's grid (bool; neighbours that enter the padding are not in it).
    preview_side > 0 also returns down-scaled 'scan' and 'subtracted' previews (report figures).
    """
    scan = StripReader(scan_path)
    blanks = [StripReader(p) for p in blank_paths]
    flat = StripReader(flat_path) if flat_path else None
    for b in [*blanks, *([flat] if flat else [])]:
        if b.shape != scan.shape:
            raise ValueError(f"{b.path}: shape {b.shape} differs from the scan's {scan.shape}")
    h, w = scan.height, scan.width
    white = bgmod.white_of(scan.dtype)
    margin = max_object_px + padding + params.closing_px + 1
    flat_mean = None
    if flat is not None:  # mean of the flat field, one pass
        total = 0.0
        for y0 in range(0, h, strip_rows):
            total += float(flat.rows(y0, min(h, y0 + strip_rows)).sum(dtype=np.float64))
        flat_mean = total / (h * w)

    def corrected(y0: int, y1: int) -> np.ndarray:
        if len(blanks) == 1:  # as it is: no float copy
            bg = blanks[0].rows(y0, y1)
        else:
            bg = bgmod.combine_blanks([b.rows(y0, y1) for b in blanks]) if blanks else None
        block = scan.rows(y0, y1)
        if bg is None:  # no blank: only the flat field (or nothing) is applied
            bg = np.full(block.shape, white, block.dtype)
        gain = bgmod.flat_gain(flat.rows(y0, y1), flat_mean) if flat is not None else None
        return bgmod.subtract(block, bg, method, gain)

    hist = None
    if params.threshold == "otsu":
        hist = np.zeros(white + 1, np.int64)
        for y0 in range(0, h, strip_rows):
            hist += seg.histogram(corrected(y0, min(h, y0 + strip_rows)))
    thr = seg.resolve_threshold(params, hist)

    factor = max(1, math.ceil(max(h, w) / preview_side)) if preview_side else 0
    prev_scan: list[np.ndarray] = []
    prev_sub: list[np.ndarray] = []
    frames, truncated, border = [], 0, 0
    for y0 in range(0, h, strip_rows):
        y1 = min(h, y0 + strip_rows)
        e0, e1 = max(0, y0 - margin), min(h, y1 + margin)
        block = corrected(e0, e1)
        lab = seg.label(seg.mask(block, thr, params), params.min_area_px, keep_border=True)
        feats = seg.features(lab, block, params.pixel_size_um, offset=(e0, 0))
        if factor:
            prev_scan.append(_preview_rows(scan.rows(y0, y1), factor))
            prev_sub.append(_preview_rows(block[y0 - e0 : y1 - e0], factor))
        if feats.empty:
            continue
        feats = feats[(feats["bbox_y0"] >= y0) & (feats["bbox_y0"] < y1)]
        cut = ((feats["bbox_y0"] <= e0) & (e0 > 0)) | ((feats["bbox_y1"] >= e1) & (e1 < h))
        truncated += int(cut.sum())
        feats = feats[~cut]
        at_border = (feats["bbox_x0"] <= 0) | (feats["bbox_y0"] <= 0) | (feats["bbox_x1"] >= w)
        at_border |= feats["bbox_y1"] >= h
        if not params.keep_border:
            border += int(at_border.sum())
            feats = feats[~at_border]
        if on_object is not None:
            for row in feats.to_dict("records"):
                box = (row["bbox_x0"], row["bbox_y0"] - e0, row["bbox_x1"], row["bbox_y1"] - e0)
                own = seg.vignette(lab, box, padding, 0) == row["label_id"]  # bbox-sized work only
                on_object(row, seg.to_uint8(seg.vignette(block, box, padding, white)), own)
        del lab
        frames.append(feats.drop(columns="label_id"))
    if truncated:
        log.warning(
            "%s: %d object(s) taller than %d px dropped (raise max_object)", scan_path, truncated, margin
        )
    objects = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=[*seg.FEATURES, *seg.PIXEL_COLUMNS])
    )
    previews = {}
    if factor:
        previews = {"scan": np.vstack(prev_scan), "subtracted": np.vstack(prev_sub)}
    return ScanResult(objects, thr, truncated, border, previews)
