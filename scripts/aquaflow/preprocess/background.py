"""Background removal: blank scans (ZooScan-style) and rolling medians (frame sequences).

Convention (as ZooProcess): images are transmitted-light grayscale, objects darker than the
background. After subtraction the background is white (the dtype's maximum) and an object pixel
keeps how much darker it was than the blank at the same place, so dust and scratches present in
both the scan and the blank cancel out and uneven illumination is flattened.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator, Sequence

import cv2
import numpy as np

METHODS = ("difference", "ratio")


def white_of(dtype: np.dtype) -> int:
    """The white level of an integer grayscale dtype (255 or 65535)."""
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16):
        raise TypeError(f"grayscale scans must be uint8 or uint16, not {dtype}")
    return int(np.iinfo(dtype).max)


def combine_blanks(blanks: Sequence[np.ndarray]) -> np.ndarray:
    """Average one or more blank scans (same shape and dtype) into a float32 background."""
    if not blanks:
        raise ValueError("at least one blank scan is needed")
    first = blanks[0]
    white_of(first.dtype)
    acc = np.zeros(first.shape, np.float32)
    for b in blanks:
        if b.shape != first.shape or b.dtype != first.dtype:
            raise ValueError(f"blank of shape {b.shape}/{b.dtype} differs from {first.shape}/{first.dtype}")
        acc += b
    acc /= len(blanks)  # in place: one float32 copy of the block in memory, not two
    return acc


def subtract(
    scan: np.ndarray,
    background: np.ndarray,
    method: str = "difference",
    flat: np.ndarray | None = None,
) -> np.ndarray:
    """Remove `background` from `scan`; result has the scan's dtype and a white background.

    difference: out = white - (background - scan), clipped (ZooProcess "neutral" method);
    ratio:      out = white * scan / background (flat-field style: also evens out illumination
                multiplicatively, so object contrast does not depend on where the object lies).
    flat: optional flat-field image (e.g. an illumination-only scan); scan and background are both
    divided by flat / mean(flat) first, which corrects vignetting the blank does not share.
    Works on any 2-D block, so callers can feed strips of a large scan with matching strips of
    the background (mean(flat) must then be given by the caller: see `flat_gain`).
    """
    if method not in METHODS:
        raise ValueError(f"unknown background method {method!r}; allowed: {', '.join(METHODS)}")
    if scan.shape != background.shape:
        raise ValueError(f"scan {scan.shape} and background {background.shape} differ in shape")
    white = white_of(scan.dtype)
    if method == "difference" and flat is None:
        # integer fast path (1-2 bytes per pixel instead of ~20): round the background to the
        # scan's dtype, then scan + (white - background) with saturation, i.e. the same formula
        bg = np.asarray(background)
        if bg.dtype != scan.dtype and scan.dtype == np.uint8:
            bg = cv2.convertScaleAbs(bg)  # rounds and saturates to uint8 without a float temporary
        elif bg.dtype != scan.dtype:
            bg = np.clip(np.rint(bg), 0, white).astype(scan.dtype)
        return cv2.add(scan, np.bitwise_not(bg))
    s = scan.astype(np.float32)
    b = np.asarray(background, np.float32)
    if flat is not None:
        s = s * flat
        b = b * flat
    out = white - (b - s) if method == "difference" else white * s / np.maximum(b, 1.0)
    return np.clip(np.rint(out), 0, white).astype(scan.dtype)


def flat_gain(flat: np.ndarray, mean: float | None = None) -> np.ndarray:
    """The multiplicative gain mean(flat) / flat used by `subtract(..., flat=gain)`."""
    f = np.maximum(np.asarray(flat, np.float32), 1.0)
    m = float(f.mean()) if mean is None else mean
    return (m / f).astype(np.float32)


def rolling_median(frames: np.ndarray, window: int = 5) -> np.ndarray:
    """Per-frame background of a (T, H, W) sequence: median of the `window` frames around each one.

    For fixed cameras (time series, video): anything that stays put (the scene) is background,
    anything that moves (organisms, particles) is not. The window is centred and shrinks at the ends.
    """
    if frames.ndim != 3:
        raise ValueError(f"frames must be (T, H, W), not {frames.shape}")
    if window < 1:
        raise ValueError("window must be >= 1")
    t = len(frames)
    half = window // 2
    out = np.empty(frames.shape, np.float32)
    for i in range(t):
        lo, hi = max(0, i - half), min(t, i - half + window)
        lo = max(0, min(lo, hi - window))
        out[i] = np.median(frames[lo:hi], axis=0)
    return out


def subtract_rolling(
    frames: Iterable[np.ndarray], window: int = 5, method: str = "difference"
) -> Iterator[np.ndarray]:
    """Stream a frame sequence through a trailing rolling-median background (bounded memory).

    Frame i is compared with the median of frames i-window+1 .. i (the first frames use what has
    been seen so far), so only `window` frames are ever held. Yields background-subtracted frames.
    """
    buf: deque[np.ndarray] = deque(maxlen=window)
    for frame in frames:
        buf.append(frame)
        bg = np.median(np.stack(buf), axis=0)
        yield subtract(frame, bg, method)
