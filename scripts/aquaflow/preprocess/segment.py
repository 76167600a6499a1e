"""Segmentation of a background-subtracted scan into objects, with EcoTaxa-named features.

Objects are darker than the white background. Steps: threshold (fixed grey level as ZooProcess,
or Otsu), morphological closing/opening, connected components (8-connectivity), minimum area in
µm² converted with the pixel size, objects touching the image border dropped or kept.

Features follow EcoTaxa/ZooProcess names, in physical units (mm, mm², degrees; grey levels for
intensities), one row per object: object_x/y (centroid), object_bx/by/width/height (bounding
box), object_area, object_esd, object_major, object_minor, object_angle, object_perim,
object_circ, object_feret, object_solidity, object_mean, object_stddev, object_min, object_max,
plus pixel bounding-box columns (bbox_x0 ... in px) used to cut vignettes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage
from skimage import filters, measure

from aquaflow.preprocess.background import white_of

FEATURES = [
    "object_x",
    "object_y",
    "object_bx",
    "object_by",
    "object_width",
    "object_height",
    "object_area",
    "object_esd",
    "object_major",
    "object_minor",
    "object_angle",
    "object_perim",
    "object_circ",
    "object_feret",
    "object_solidity",
    "object_mean",
    "object_stddev",
    "object_min",
    "object_max",
]
PIXEL_COLUMNS = ["bbox_x0", "bbox_y0", "bbox_x1", "bbox_y1", "area_px"]


@dataclass(frozen=True)
class SegmentParams:
    """Segmentation settings; sizes are physical so they do not change with the scan resolution."""

    pixel_size_um: float  # side of one pixel in µm (ZooScan 2400 dpi: 10.58)
    threshold: int | str = 243  # grey level (objects are < threshold) or "otsu"
    min_area_um2: float = 0.0
    closing_px: int = 1  # radius of the closing that joins one object's broken parts (0 = none)
    opening_px: int = 0  # radius of the opening that removes thin noise (0 = none)
    fill_holes: bool = True
    keep_border: bool = False  # objects touching the image border: keep (True) or drop

    @property
    def min_area_px(self) -> int:
        return max(1, math.ceil(self.min_area_um2 / self.pixel_size_um**2))


def otsu_threshold(hist: np.ndarray) -> int:
    """Otsu's threshold from a grey-level histogram (works for histograms summed over strips)."""
    return int(filters.threshold_otsu(hist=(hist.astype(np.float64), np.arange(len(hist)))))


def histogram(image: np.ndarray) -> np.ndarray:
    white = white_of(image.dtype)
    return np.bincount(image.ravel(), minlength=white + 1)


def resolve_threshold(params: SegmentParams, hist: np.ndarray | None) -> int:
    if params.threshold == "otsu":
        if hist is None:
            raise ValueError("Otsu needs the histogram of the whole scan")
        return otsu_threshold(hist)
    return int(params.threshold)


def mask(image: np.ndarray, threshold: int, params: SegmentParams) -> np.ndarray:
    """Binary object mask of a background-subtracted block (objects darker than `threshold`)."""
    m = (image < threshold).view(np.uint8)
    if params.closing_px:
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, _disk(params.closing_px))
    if params.opening_px:
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, _disk(params.opening_px))
    m = m.view(bool)
    if params.fill_holes:
        m = ndimage.binary_fill_holes(m)
    return m


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def label(m: np.ndarray, min_area_px: int, keep_border: bool = True) -> np.ndarray:
    """Connected components (8-connectivity) of at least `min_area_px` pixels.

    Dropped components become 0; the others keep their label, so labels are increasing but not
    consecutive (relabelling would cost another int32 copy of the block): use `label_id`.
    """
    m8 = m.view(np.uint8) if m.dtype == bool else m.astype(np.uint8)
    n, lab, stats, _ = cv2.connectedComponentsWithStats(m8, connectivity=8, ltype=cv2.CV_32S)
    keep = np.zeros(n, bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area_px
    if not keep_border:
        h, w = m.shape
        x, y = stats[:, cv2.CC_STAT_LEFT], stats[:, cv2.CC_STAT_TOP]
        x1, y1 = x + stats[:, cv2.CC_STAT_WIDTH], y + stats[:, cv2.CC_STAT_HEIGHT]
        keep &= (x > 0) & (y > 0) & (x1 < w) & (y1 < h)
    keep[0] = True  # background stays 0 either way
    if not keep.all():
        lab[(~keep)[lab]] = 0  # a bool lookup (1 byte per pixel), in place
    return lab


def features(labels: np.ndarray, image: np.ndarray, pixel_size_um: float, offset=(0, 0)) -> pd.DataFrame:
    """One row per labelled object: EcoTaxa features in mm / mm² / degrees, plus pixel bbox.

    `offset` = (row, col) of this block in the whole scan, so strips give scan coordinates.
    """
    mm = pixel_size_um / 1000.0
    oy, ox = offset
    rows = []
    for p in measure.regionprops(labels, intensity_image=image):
        y0, x0, y1, x1 = p.bbox
        vals = image[y0:y1, x0:x1][p.image]
        area_px = int(p.area)
        perim_px = float(p.perimeter) or 1.0
        cy, cx = p.centroid
        rows.append(
            {
                "object_x": (cx + ox) * mm,
                "object_y": (cy + oy) * mm,
                "object_bx": (x0 + ox) * mm,
                "object_by": (y0 + oy) * mm,
                "object_width": (x1 - x0) * mm,
                "object_height": (y1 - y0) * mm,
                "object_area": area_px * mm * mm,
                "object_esd": 2.0 * math.sqrt(area_px / math.pi) * mm,
                "object_major": float(p.axis_major_length) * mm,
                "object_minor": float(p.axis_minor_length) * mm,
                "object_angle": math.degrees(float(p.orientation)),
                "object_perim": perim_px * mm,
                "object_circ": min(1.0, 4.0 * math.pi * area_px / perim_px**2),
                "object_feret": float(p.feret_diameter_max) * mm,
                "object_solidity": float(p.solidity),
                "object_mean": float(vals.mean()),
                "object_stddev": float(vals.std()),
                "object_min": float(vals.min()),
                "object_max": float(vals.max()),
                "bbox_x0": x0 + ox,
                "bbox_y0": y0 + oy,
                "bbox_x1": x1 + ox,
                "bbox_y1": y1 + oy,
                "area_px": area_px,
                "label_id": int(p.label),
            }
        )
    df = pd.DataFrame(rows, columns=[*FEATURES, *PIXEL_COLUMNS, "label_id"])
    return df.astype({c: "int64" for c in [*PIXEL_COLUMNS, "label_id"]})


def segment(image: np.ndarray, params: SegmentParams) -> tuple[np.ndarray, pd.DataFrame]:
    """Segment a whole (small enough) background-subtracted image: (labels, features)."""
    thr = resolve_threshold(params, histogram(image) if params.threshold == "otsu" else None)
    lab = label(mask(image, thr, params), params.min_area_px, params.keep_border)
    return lab, features(lab, image, params.pixel_size_um)


def vignette(
    image: np.ndarray, box: tuple[int, int, int, int], padding: int, white: int | None = None
) -> np.ndarray:
    """Cut box (x0, y0, x1, y1) with `padding` px on each side; outside the image is white."""
    x0, y0, x1, y1 = box
    if white is None:
        white = white_of(image.dtype)
    h, w = image.shape[:2]
    out = np.full((y1 - y0 + 2 * padding, x1 - x0 + 2 * padding), white, image.dtype)
    sy0, sx0 = max(0, y0 - padding), max(0, x0 - padding)
    sy1, sx1 = min(h, y1 + padding), min(w, x1 + padding)
    out[sy0 - (y0 - padding) : sy1 - (y0 - padding), sx0 - (x0 - padding) : sx1 - (x0 - padding)] = image[
        sy0:sy1, sx0:sx1
    ]
    return out


def to_uint8(image: np.ndarray) -> np.ndarray:
    """8-bit copy for vignettes (EcoTaxa accepts 8-bit images only): 16-bit is divided by 257."""
    if image.dtype == np.uint8:
        return image
    return np.rint(image.astype(np.float32) / 257.0).astype(np.uint8)
