"""Synthetic plankton-like crops for drift tests and benchmarks: i.i.d. draws from one fixed
distribution (FlowCam-like: dark textured objects on a light background), plus shifted versions."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

CLASSES = ("ellipse", "bar", "ring")


def crop(rng: np.random.Generator, instrument: str = "flowcam") -> tuple[np.ndarray, int]:
    """One RGB uint8 crop and its class index. instrument="other": a different camera (dark
    background, bright larger objects, other size range), the kind of shift a new instrument brings."""
    if instrument == "flowcam":
        w, h = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        bg, col = rng.normal(225, 6), rng.normal([120, 110, 90], 15)
    else:
        w, h = int(rng.integers(90, 160)), int(rng.integers(60, 100))
        bg, col = rng.normal(30, 6), rng.normal([200, 210, 220], 15)
    img = np.full((h, w, 3), bg, np.float32)
    cls = int(rng.integers(len(CLASSES)))
    cx, cy = w / 2 + rng.normal(0, 3), h / 2 + rng.normal(0, 3)
    a, b = rng.uniform(0.2, 0.42) * w, rng.uniform(0.2, 0.42) * h
    mask = np.zeros((h, w), np.uint8)
    if cls == 0:
        cv2.ellipse(mask, (int(cx), int(cy)), (int(a), int(b)), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    elif cls == 1:
        cv2.rectangle(mask, (int(cx - a), int(cy - b / 2)), (int(cx + a), int(cy + b / 2)), 1, -1)
    else:
        cv2.circle(mask, (int(cx), int(cy)), max(2, int(min(a, b))), 1, 3)
    texture = rng.normal(0, 20, (h, w, 1))
    img = np.where(mask[..., None] > 0, col + texture, img)
    img += rng.normal(0, 4, img.shape)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.clip(img, 0, 255).astype(np.uint8), cls


def blur(image: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma)


def darken(image: np.ndarray, factor: float = 0.6) -> np.ndarray:
    return (image.astype(np.float32) * factor).astype(np.uint8)


def write_images(
    folder: str | Path,
    n: int,
    seed: int,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    instrument: str = "flowcam",
) -> list[tuple[Path, str]]:
    """n PNG crops in `folder`; returns (path, class name) per image."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image, cls = crop(rng, instrument)
        if transform is not None:
            image = transform(image)
        path = folder / f"img_{seed}_{i:05d}_{CLASSES[cls]}.png"  # name order is not class order
        cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        out.append((path, CLASSES[cls]))
    return out
