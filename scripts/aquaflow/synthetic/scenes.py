"""Synthetic scenes with exact ground truth for detection, instance segmentation and oriented boxes.

Four kinds, one per use case, each written as a YOLO dataset folder (`data.yaml`, `images/<split>/`,
`labels/<split>/`) that Ultralytics and `aquaflow.tasks.detect.formats` read:
- fish (detect): fish-like shapes (oval body + tail) of two species on a textured underwater
  background (depth gradient, caustics, particles);
- coral (segment): coral-like blobs (irregular star polygons) of two species, polygon labels;
- diatoms (obb): rotated, elongated diatom-like ellipses with striae, 4-corner labels;
- beach (segment): beach-camera scenes (sand, sea, sky) crossed by wrack bands (dark, irregular
  strips along the shore), polygon labels; large images for tiled inference.

Every object is a polygon in pixels; labels are derived from it (bbox, polygon, or the minimum-area
rotated rectangle), so the truth is exact. `place` draws one object where the caller wants it (the
tile-border test puts a fish across a tile border).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

KINDS = {
    "fish": ("detect", ("sparus", "diplodus")),
    "coral": ("segment", ("desmophyllum", "madrepora")),
    "diatoms": ("obb", ("navicula", "nitzschia")),
    "beach": ("segment", ("wrack",)),
}

SIZES = {"fish": (0.22, 0.4), "coral": (0.16, 0.3), "diatoms": (0.3, 0.55)}  # object length / image side


@dataclass
class Obj:
    cls: int
    polygon: np.ndarray  # (n, 2) float pixels, x y


def _underwater(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    depth = yy / max(h - 1, 1)
    img = np.empty((h, w, 3), np.float32)
    img[..., 0] = 20 + 25 * (1 - depth)  # R
    img[..., 1] = 90 + 50 * (1 - depth)  # G
    img[..., 2] = 110 + 60 * (1 - depth)  # B
    caustic = np.sin(xx / rng.uniform(6, 11) + np.sin(yy / rng.uniform(7, 13)) * 2.0)
    img += (caustic * 8)[..., None]
    img += cv2.GaussianBlur(rng.normal(0, 18, (h, w)).astype(np.float32), (0, 0), 4)[..., None]
    img += rng.normal(0, 4, (h, w, 3))
    for _ in range(int(h * w / 900)):  # suspended particles
        cv2.circle(img, (int(rng.integers(w)), int(rng.integers(h))), 1, (150, 170, 170), -1)
    return img


def _fish_polygon(cx: float, cy: float, length: float, angle: float, flip: bool) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
    body = np.stack([0.38 * length * np.cos(t), 0.16 * length * np.sin(t)], 1)
    tail = np.array([[0.32, 0.0], [0.55, 0.17], [0.55, -0.17]]) * length
    body = body[np.argsort(np.arctan2(body[:, 1], body[:, 0]))]
    pts = np.concatenate([body[(body[:, 0] < 0.3 * length)], tail])
    if flip:
        pts[:, 0] *= -1
    c, s = math.cos(angle), math.sin(angle)
    rot = pts @ np.array([[c, s], [-s, c]])
    return cv2.convexHull((rot + np.array([cx, cy])).astype(np.float32)).reshape(-1, 2)


def _draw_fish(rng, img, cls, cx, cy, length) -> Obj:
    poly = _fish_polygon(cx, cy, length, rng.uniform(-0.35, 0.35), bool(rng.integers(2)))
    colour = (230, 200, 60) if cls == 0 else (200, 205, 215)  # sparus golden, diplodus silver
    cv2.fillPoly(img, [poly.round().astype(np.int32)], colour)
    if cls == 1:  # dark vertical bands
        x0, x1 = poly[:, 0].min(), poly[:, 0].max()
        for k in (0.35, 0.6):
            x = int(x0 + k * (x1 - x0))
            mask = np.zeros(img.shape[:2], np.uint8)
            cv2.fillPoly(mask, [poly.round().astype(np.int32)], 1)
            band = mask.astype(bool) & (np.abs(np.arange(img.shape[1]) - x) < max(1, length // 14))[None]
            img[band] = (60, 60, 70)
    eye = poly[np.argmin(poly[:, 0])] * 0.8 + poly.mean(0) * 0.2
    cv2.circle(img, tuple(int(v) for v in eye), max(1, int(length / 16)), (10, 10, 10), -1)
    return Obj(cls, poly)


def _blob_polygon(rng, cx, cy, r, arms) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    phase = rng.uniform(0, 2 * np.pi)
    rad = r * (0.7 + 0.3 * np.cos(arms * t + phase)) * rng.uniform(0.9, 1.1, t.size)
    return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], 1).astype(np.float32)


def _draw_coral(rng, img, cls, cx, cy, r) -> Obj:
    poly = _blob_polygon(rng, cx, cy, r, arms=5 if cls == 0 else 3)
    colour = (235, 235, 225) if cls == 0 else (235, 140, 60)  # desmophyllum white, madrepora orange
    cv2.fillPoly(img, [poly.round().astype(np.int32)], colour)
    for _ in range(6):  # polyps
        p = poly[rng.integers(len(poly))] * 0.6 + np.array([cx, cy]) * 0.4
        cv2.circle(img, tuple(int(v) for v in p), max(1, int(r / 8)), (120, 80, 60), -1)
    return Obj(cls, poly)


def _draw_diatom(rng, img, cls, cx, cy, length) -> Obj:
    ratio = 0.32 if cls == 0 else 0.14  # navicula broad, nitzschia slender
    angle = rng.uniform(0, 180)
    axes = (length / 2, length * ratio / 2)
    cv2.ellipse(img, ((cx, cy), (axes[0] * 2, axes[1] * 2), angle), (70, 60, 40), -1)
    cv2.ellipse(img, ((cx, cy), (axes[0] * 1.6, axes[1] * 1.2), angle), (150, 135, 95), -1)
    a = math.radians(angle)
    for k in np.linspace(-0.35, 0.35, 7):  # striae across the valve
        px, py = cx + k * length * math.cos(a), cy + k * length * math.sin(a)
        dx, dy = -math.sin(a) * axes[1] * 0.8, math.cos(a) * axes[1] * 0.8
        cv2.line(img, (int(px - dx), int(py - dy)), (int(px + dx), int(py + dy)), (60, 50, 35), 1)
    corners = cv2.boxPoints(((cx, cy), (axes[0] * 2, axes[1] * 2), angle))
    return Obj(cls, corners.astype(np.float32))


def _beach_background(rng, h, w) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    horizon = h * rng.uniform(0.12, 0.2)
    shore = h * rng.uniform(0.35, 0.5) + 0.03 * h * np.sin(xx / w * rng.uniform(3, 6) + rng.uniform(0, 6))
    img = np.empty((h, w, 3), np.float32)
    img[:] = (200, 180, 140)  # sand
    img += cv2.GaussianBlur(rng.normal(0, 12, (h, w)).astype(np.float32), (0, 0), 3)[..., None]
    sea = (yy < shore) & (yy >= horizon)
    img[sea] = (40, 110, 140)
    img[sea] += (np.sin(xx / 9 + yy / 3)[sea] * 10)[:, None]
    img[yy < horizon] = (170, 200, 230)
    return img, shore[0]


def _wrack_band(rng, img, shore_y, x0, x1, width) -> Obj:
    xs = np.linspace(x0, x1, 24)
    base = np.interp(xs, np.arange(shore_y.size), shore_y) + width * rng.uniform(1.0, 2.5)
    top = base - width * (0.5 + 0.5 * rng.random(xs.size))
    bottom = base + width * (0.5 + 0.5 * rng.random(xs.size))
    poly = np.concatenate([np.stack([xs, top], 1), np.stack([xs[::-1], bottom[::-1]], 1)]).astype(np.float32)
    cv2.fillPoly(img, [poly.round().astype(np.int32)], (70, 55, 30))
    return Obj(0, poly)


def _clear(objs: list[Obj], cx: float, cy: float, r: float) -> bool:
    return all(np.hypot(*(o.polygon.mean(0) - (cx, cy))) > r + np.ptp(o.polygon, 0).max() / 2 for o in objs)


def make_scene(kind: str, rng: np.random.Generator, h: int, w: int, n: int | None = None):
    """One RGB image (uint8) and its objects; `n` objects (default: random 1-4, beach 1-3)."""
    if kind not in KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; known: {sorted(KINDS)}")
    objs: list[Obj] = []
    if kind == "beach":
        img, shore = _beach_background(rng, h, w)
        n = n if n is not None else int(rng.integers(1, 4))
        edges = np.sort(rng.choice(np.arange(1, 8), size=max(0, n - 1), replace=False)) / 8 * w
        bounds = [0.0, *edges.tolist(), float(w)]
        for i in range(n):
            lo, hi = bounds[i], bounds[i + 1]
            span = hi - lo
            objs.append(
                _wrack_band(rng, img, shore, lo + 0.1 * span, hi - 0.1 * span, h * rng.uniform(0.05, 0.08))
            )
        return np.clip(img, 0, 255).astype(np.uint8), objs
    img = _underwater(rng, h, w) if kind in ("fish", "coral") else _microscope(rng, h, w)
    n = n if n is not None else int(rng.integers(1, 5))
    side = min(h, w)
    lo, hi = SIZES[kind]
    for _ in range(n):
        for _attempt in range(30):
            size = side * rng.uniform(lo, hi)
            cx, cy = rng.uniform(size * 0.6, w - size * 0.6), rng.uniform(size * 0.6, h - size * 0.6)
            if _clear(objs, cx, cy, size / 2):
                objs.append(place(kind, rng, img, int(rng.integers(len(KINDS[kind][1]))), cx, cy, size))
                break
    return np.clip(img, 0, 255).astype(np.uint8), objs


def _microscope(rng, h, w) -> np.ndarray:
    img = np.full((h, w, 3), 215, np.float32)
    img += cv2.GaussianBlur(rng.normal(0, 10, (h, w)).astype(np.float32), (0, 0), 8)[..., None]
    return img + rng.normal(0, 3, (h, w, 3))


def place(
    kind: str, rng: np.random.Generator, img: np.ndarray, cls: int, cx: float, cy: float, size: float
) -> Obj:
    """Draw one object of class `cls` centred at (cx, cy), `size` px long, into `img` (in place)."""
    draw = {"fish": _draw_fish, "coral": lambda *a: _draw_coral(*a[:-1], a[-1] / 2), "diatoms": _draw_diatom}
    return draw[kind](rng, img, cls, cx, cy, size)


def label_rows(kind: str, objs: list[Obj], h: int, w: int) -> list[str]:
    """YOLO label rows (normalised) for the task of `kind`."""
    task = KINDS[kind][0]
    rows = []
    for o in objs:
        p = np.clip(o.polygon, 0, [w, h]) / [w, h]
        if task == "detect":
            (x0, y0), (x1, y1) = p.min(0), p.max(0)
            vals = [(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0]
        elif task == "obb":
            vals = p.ravel().tolist()
        else:
            vals = p.ravel().tolist()
        rows.append(f"{o.cls} " + " ".join(f"{v:.6f}" for v in vals))
    return rows


def write_dataset(
    kind: str,
    root: str | Path,
    n_train: int = 48,
    n_val: int = 16,
    size: tuple[int, int] = (192, 192),
    seed: int = 0,
    n_test: int = 0,
) -> Path:
    """A YOLO dataset folder of `kind` scenes (h, w = size); returns the path of its data.yaml."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    splits = {"train": n_train, "val": n_val, "test": n_test}
    for split, count in splits.items():
        if not count:
            continue
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            img, objs = make_scene(kind, rng, h, w)
            stem = f"{kind}_{split}_{i:04d}"
            cv2.imwrite(str(root / "images" / split / f"{stem}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
            (root / "labels" / split / f"{stem}.txt").write_text(
                "\n".join(label_rows(kind, objs, h, w)) + "\n"
            )
    names = dict(enumerate(KINDS[kind][1]))
    data = {"names": names, **{s: f"images/{s}" for s, c in splits.items() if c}}
    (root / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    return root / "data.yaml"


def write_images(kind: str, folder: str | Path, n: int, size: tuple[int, int], seed: int = 1) -> list[Path]:
    """Unlabelled scenes for a campaign (JPEG, as cameras write them)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img, _ = make_scene(kind, rng, *size)
        path = folder / f"{kind}_{i:04d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
        out.append(path)
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description="Write a synthetic YOLO dataset (fish, coral, diatoms, beach).")
    ap.add_argument("kind", choices=sorted(KINDS))
    ap.add_argument("root")
    ap.add_argument("--train", type=int, default=48)
    ap.add_argument("--val", type=int, default=16)
    ap.add_argument("--size", type=int, nargs=2, default=(192, 192), metavar=("H", "W"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(write_dataset(args.kind, args.root, args.train, args.val, tuple(args.size), args.seed))


if __name__ == "__main__":
    main()
