"""Batched Ultralytics prediction on decoded images, whole or tiled, into `Detections`.

`Detector` wraps a loaded Ultralytics model: `predict(images)` runs one Ultralytics call per batch
of RGB uint8 arrays (decoded by our engine, never by Ultralytics) and returns one `Detections` per
image. `predict_tiled` cuts every image into overlapping tiles (`aquaflow.preprocess.tiles.grid`),
predicts all tiles of a batch in batched calls, shifts the results back to image coordinates and
merges duplicates across tile borders (`aquaflow.tasks.detect.detections.merge`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from aquaflow.preprocess import tiles as tiling
from aquaflow.tasks.detect.detections import Detections, concat, merge, shift


class Detector:
    """An Ultralytics model ready for batches of decoded RGB arrays."""

    def __init__(self, model, task: str, settings: dict[str, Any], device: str = "cpu"):
        self.model, self.task, self.device = model, task, device
        self.imgsz = int(settings["imgsz"])
        self.conf = float(settings["conf"])
        self.iou = float(settings["iou"])
        self.max_det = int(settings["max_det"])
        self.classes = list(model.names.values()) if isinstance(model.names, dict) else list(model.names)

    def _results(self, arrays: list[np.ndarray], imgsz: int | None = None) -> list:
        bgr = [np.ascontiguousarray(a[..., ::-1]) for a in arrays]  # Ultralytics takes OpenCV order
        return self.model.predict(
            bgr,
            imgsz=imgsz or self.imgsz,
            conf=self.conf,
            iou=self.iou,
            max_det=self.max_det,
            device=self.device,
            retina_masks=True,  # masks at the image's own resolution
            verbose=False,
            save=False,
        )

    def _convert(self, r, h: int, w: int) -> Detections:
        if self.task == "obb":
            o = r.obb
            if o is None or not len(o):
                return Detections.empty("obb", h, w)
            return Detections(
                o.xyxy.cpu().numpy().astype(np.float32),
                o.conf.cpu().numpy().astype(np.float32),
                o.cls.cpu().numpy().astype(np.int64),
                o.xywhr.cpu().numpy().astype(np.float32),
                None,
                h,
                w,
            )
        b = r.boxes
        if b is None or not len(b):
            return Detections.empty(self.task, h, w)
        masks = None
        if self.task == "segment":
            data = r.masks.data.cpu().numpy() > 0.5 if r.masks is not None else np.zeros((len(b), h, w), bool)
            masks = [m[:h, :w] for m in data]
        return Detections(
            b.xyxy.cpu().numpy().astype(np.float32),
            b.conf.cpu().numpy().astype(np.float32),
            b.cls.cpu().numpy().astype(np.int64),
            None,
            masks,
            h,
            w,
        )

    def predict(self, images: list[np.ndarray]) -> list[Detections]:
        """One Ultralytics call for the whole batch; one Detections per image."""
        if not images:
            return []
        return [self._convert(r, *im.shape[:2]) for r, im in zip(self._results(images), images, strict=True)]

    def predict_tiled(
        self, images: list[np.ndarray], cfg: dict[str, Any], batch_size: int = 16
    ) -> list[Detections]:
        """Tiles of side cfg['tile'] overlapping by cfg['overlap'] px, predicted in batches of
        `batch_size` tiles, shifted back and merged; with cfg['full_image'] the whole image is
        predicted as well (catches objects larger than a tile)."""
        tile, overlap = int(cfg["tile"]), int(cfg["overlap"])
        jobs: list[tuple[int, int, int, np.ndarray]] = []  # (image index, x, y, tile pixels)
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            for x, y, tw, th in tiling.grid(h, w, tile, overlap)[["x", "y", "w", "h"]].itertuples(
                index=False
            ):
                jobs.append((i, int(x), int(y), im[y : y + th, x : x + tw]))
        parts: list[list[Detections]] = [[] for _ in images]
        for start in range(0, len(jobs), batch_size):
            chunk = jobs[start : start + batch_size]
            results = self._results([j[3] for j in chunk], imgsz=_imgsz_for(tile, self.imgsz))
            for (i, x, y, arr), r in zip(chunk, results, strict=True):
                det = self._convert(r, *arr.shape[:2])
                h, w = images[i].shape[:2]
                parts[i].append(shift(det, x, y, h, w))
        if cfg.get("full_image", False):
            for i, det in enumerate(self.predict(images)):
                parts[i].append(det)
        out = []
        for i, im in enumerate(images):
            h, w = im.shape[:2]
            joined = concat(parts[i], self.task, h, w)
            out.append(
                merge(joined, cfg["merge"], cfg["match_metric"], float(cfg["match_threshold"]), self.max_det)
            )
        return out


def _imgsz_for(tile: int, imgsz: int) -> int:
    return max(32, min(imgsz, int(math.ceil(tile / 32) * 32)))
