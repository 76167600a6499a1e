"""What one prediction of a detection-type task is: `Detections` of one image in its pixels.

Boxes (xyxy), scores, classes, oriented boxes (obb) and masks (segment); `shift`/`concat`/`merge`
join the detections of overlapping tiles (greedy non-maximum merging or suppression with
intersection-over-smaller or IoU matching, the post-processing SAHI uses; masks of merged
detections are united). Any backend that finds objects returns these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Detections:
    """Detections of one image, in pixels of that image."""

    xyxy: np.ndarray  # (n, 4) float32 axis-aligned boxes
    score: np.ndarray  # (n,) float32
    cls: np.ndarray  # (n,) int64
    obb: np.ndarray | None = None  # (n, 5) cx cy w h angle(rad), obb task only
    masks: list[np.ndarray] | None = None  # n boolean masks of the image size, segment task only
    height: int = 0
    width: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.score)

    @classmethod
    def empty(cls, task: str, h: int, w: int) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros(0, np.float32),
            np.zeros(0, np.int64),
            np.zeros((0, 5), np.float32) if task == "obb" else None,
            [] if task == "segment" else None,
            h,
            w,
        )

    def take(self, idx: np.ndarray) -> Detections:
        idx = np.asarray(idx, dtype=np.int64)
        return Detections(
            self.xyxy[idx],
            self.score[idx],
            self.cls[idx],
            None if self.obb is None else self.obb[idx],
            None if self.masks is None else [self.masks[i] for i in idx],
            self.height,
            self.width,
        )


def obb_corners(obb: np.ndarray) -> np.ndarray:
    """(n, 5) cx cy w h angle(rad) -> (n, 4, 2) corner points (Ultralytics xywhr2xyxyxyxy order)."""
    cx, cy, w, h, a = (obb[:, i] for i in range(5))
    c, s = np.cos(a), np.sin(a)
    v1 = np.stack([w / 2 * c, w / 2 * s], 1)
    v2 = np.stack([-h / 2 * s, h / 2 * c], 1)
    ctr = np.stack([cx, cy], 1)
    return np.stack([ctr + v1 + v2, ctr + v1 - v2, ctr - v1 - v2, ctr - v1 + v2], 1).astype(np.float32)


def shift(det: Detections, x: int, y: int, h: int, w: int) -> Detections:
    """Detections of a tile at (x, y) moved into the coordinates of an h x w image."""
    masks = None
    if det.masks is not None:
        masks = []
        for m in det.masks:
            full = np.zeros((h, w), bool)
            th, tw = m.shape
            full[y : y + th, x : x + tw] = m[: h - y, : w - x]
            masks.append(full)
    obb = None
    if det.obb is not None:
        obb = det.obb.copy()
        obb[:, 0] += x
        obb[:, 1] += y
    return Detections(det.xyxy + np.array([x, y, x, y], np.float32), det.score, det.cls, obb, masks, h, w)


def concat(parts: list[Detections], task: str, h: int, w: int) -> Detections:
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty(task, h, w)
    return Detections(
        np.concatenate([p.xyxy for p in parts]),
        np.concatenate([p.score for p in parts]),
        np.concatenate([p.cls for p in parts]),
        np.concatenate([p.obb for p in parts]) if task == "obb" else None,
        [m for p in parts for m in p.masks] if task == "segment" else None,
        h,
        w,
    )


def _overlap(box: np.ndarray, others: np.ndarray, metric: str) -> np.ndarray:
    ix0 = np.maximum(box[0], others[:, 0])
    iy0 = np.maximum(box[1], others[:, 1])
    ix1 = np.minimum(box[2], others[:, 2])
    iy1 = np.minimum(box[3], others[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    a = (box[2] - box[0]) * (box[3] - box[1])
    b = (others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1])
    if metric == "ios":
        return inter / np.maximum(np.minimum(a, b), 1e-9)
    return inter / np.maximum(a + b - inter, 1e-9)


def merge(det: Detections, method: str, metric: str, threshold: float, max_det: int) -> Detections:
    """Greedy per-class merging of duplicates (highest score first).

    `nms`: a detection matching a kept one (overlap >= threshold) is dropped. `nmm`: it is merged
    into the kept one (box = union box, mask = union of masks, obb = the kept one's), as SAHI's
    GREEDYNMM does. `none`: everything is kept.
    """
    if method == "none" or len(det) < 2:
        return det
    order = np.argsort(-det.score, kind="stable")
    alive = np.ones(len(det), bool)
    keep: list[int] = []
    xyxy = det.xyxy.copy()
    masks = None if det.masks is None else list(det.masks)
    for i in order:
        if not alive[i]:
            continue
        alive[i] = False
        keep.append(i)
        cand = np.flatnonzero(alive & (det.cls == det.cls[i]))
        if not len(cand):
            continue
        hit = cand[_overlap(det.xyxy[i], det.xyxy[cand], metric) >= threshold]
        alive[hit] = False
        if method == "nmm" and len(hit):
            group = np.concatenate([[i], hit])
            xyxy[i] = [*det.xyxy[group, :2].min(0), *det.xyxy[group, 2:].max(0)]
            if masks is not None:
                masks[i] = np.logical_or.reduce([det.masks[j] for j in group])
    keep_arr = np.array(keep[:max_det], dtype=np.int64)
    out = det.take(keep_arr)
    out.xyxy = xyxy[keep_arr]
    if masks is not None:
        out.masks = [masks[j] for j in keep_arr]
    return out
