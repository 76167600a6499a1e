"""A folder holding every kind of awkward input a bulk run meets, with the expected outcome."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from aquaflow.data import imaging


def _blob(rng: np.random.Generator, h: int = 48, w: int = 40) -> np.ndarray:
    """A plankton-like dark blob on a light background, RGB uint8."""
    img = np.full((h, w, 3), 225, np.uint8)
    cy, cx = h // 2, w // 2
    cv2.ellipse(
        img,
        (cx, cy),
        (w // 3, h // 3),
        float(rng.integers(0, 180)),
        0,
        360,
        tuple(int(v) for v in rng.integers(40, 120, 3)),
        -1,
    )
    return img


def write_bad_inputs(folder: str | Path, seed: int = 0) -> dict[str, str | None]:
    """Write one file per case; return {relative path: expected rejection reason or None (=ok)}.

    Converted, not rejected: grayscale, RGBA, palette, 16-bit PNG/TIFF, float TIFF, 1-bit.
    Rejected: zero bytes, truncated JPEG, not an image, decompression bomb, unsupported sample
    type, broken symlink, a directory named like an image.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rgb = _blob(rng)
    bgr = rgb[:, :, ::-1]  # OpenCV writes BGR arrays
    gray = rgb[:, :, 0]
    expect: dict[str, str | None] = {}

    def put(name: str, reason: str | None) -> Path:
        expect[name] = reason
        return folder / name

    Image.fromarray(rgb).save(put("good_rgb.jpg", None), quality=90)
    Image.fromarray(rgb).save(put("good_rgb.png", None))
    Image.fromarray(gray).save(put("gray.png", None))
    Image.fromarray(np.dstack([rgb, np.full(gray.shape, 200, np.uint8)])).save(put("rgba.png", None))
    Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE).save(put("palette.gif", None))
    Image.fromarray(gray > 128).save(put("bilevel.png", None))
    cv2.imwrite(str(put("gray16.png", None)), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(put("rgb16.tif", None)), bgr.astype(np.uint16) * 257)
    cv2.imwrite(str(put("float_rgb.tif", None)), bgr.astype(np.float32) / 255.0)

    put("empty.jpg", imaging.ZERO_BYTES).write_bytes(b"")
    jpeg = (folder / "good_rgb.jpg").read_bytes()
    put("truncated.jpg", imaging.TRUNCATED).write_bytes(jpeg[: len(jpeg) // 2])
    put("notes.png", imaging.NOT_AN_IMAGE).write_text("this is a text file, not a PNG\n")
    # 1-bit PNG of 15000 x 15000 = 225 MP: a few kB on disk, above the 200 MP default guard
    Image.new("1", (15000, 15000)).save(put("bomb.png", imaging.TOO_LARGE))
    cv2.imwrite(str(put("int32.tif", imaging.UNSUPPORTED_MODE)), bgr.astype(np.int32) * 1000)
    os.symlink(folder / "does_not_exist.jpg", put("broken_link.jpg", imaging.BROKEN_LINK))
    put("folder.jpg", imaging.UNREADABLE).mkdir()
    return expect
