"""Detection outputs: the per-detection Parquet table, per-image counts, COCO results, overlays.

Parquet (`predictions.parquet`, one row per detection):
  seq, id (content hash of the image), source, <campaign metadata / inputs columns>, det (index in
  the image), class, class_id, score, x, y, w, h (axis-aligned box, pixels, top-left origin),
  area_px (mask pixels for segment, w*h of the rotated box for obb, box area for detect),
  area_<unit>2 (when `detection.pixel_size` is set), image_width, image_height,
  obb_cx, obb_cy, obb_w, obb_h, obb_angle (radians), obb_corners (8 floats)   [obb only],
  rle (COCO RLE counts string of the mask at image size)                     [segment only],
  model_id, run_id.
Counts (`counts.parquet`, one row per predicted image, zero-detection images included): seq, id,
source, n, n_<class> per class. COCO results (`detections.json`): a list of
{image_id (= seq), category_id (= class_id + 1), score, bbox [x, y, w, h]} plus `segmentation`
(RLE {size, counts}) for segment and, for obb, the extension field
`"obb": {"xywhr": [cx, cy, w, h, angle_rad], "corners": [x1, y1, ..., x4, y4]}` (pycocotools
ignores unknown keys and scores the axis-aligned `bbox`). `coco_images.json` lists the images
and categories, so `COCO(coco_images.json).loadRes(detections.json)` works.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa

from aquaflow.io import atomic_path
from aquaflow.tasks.detect.detections import Detections, obb_corners

UNIT_SCALE = {"um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}  # µm per unit


def rle_encode(mask: np.ndarray) -> str:
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return rle["counts"].decode("ascii")


def rle_decode(counts: str, h: int, w: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    return mask_utils.decode({"size": [h, w], "counts": counts.encode("ascii")}).astype(bool)


def detection_schema(task: str, meta: pa.Schema, area_column: str | None) -> pa.Schema:
    f = pa.field
    fields = [f("seq", pa.int64()), f("id", pa.string()), f("source", pa.string()), *meta]
    fields += [f("det", pa.int32()), f("class", pa.string()), f("class_id", pa.int32())]
    fields += [f("score", pa.float32())] + [f(k, pa.float32()) for k in ("x", "y", "w", "h")]
    fields += [f("area_px", pa.float64())]
    if area_column:
        fields.append(f(area_column, pa.float64()))
    fields += [f("image_width", pa.int32()), f("image_height", pa.int32())]
    if task == "obb":
        fields += [f(k, pa.float32()) for k in ("obb_cx", "obb_cy", "obb_w", "obb_h", "obb_angle")]
        fields.append(f("obb_corners", pa.list_(pa.float32(), 8)))
    if task == "segment":
        fields.append(f("rle", pa.string()))
    return pa.schema([*fields, f("model_id", pa.string()), f("run_id", pa.string())])


def area_column(pixel_size: dict[str, Any] | None) -> str | None:
    return f"area_{pixel_size['unit']}2" if pixel_size else None


def detection_rows(
    det: Detections, task: str, classes: list[str], pixel_size: dict | None
) -> dict[str, list]:
    """Columns of one image's detections (without the image/run columns)."""
    n = len(det)
    xyxy = det.xyxy.astype(np.float64)
    cols: dict[str, Any] = {
        "det": list(range(n)),
        "class": [classes[c] for c in det.cls],
        "class_id": det.cls.astype(np.int32).tolist(),
        "score": det.score.tolist(),
        "x": xyxy[:, 0].tolist(),
        "y": xyxy[:, 1].tolist(),
        "w": (xyxy[:, 2] - xyxy[:, 0]).tolist(),
        "h": (xyxy[:, 3] - xyxy[:, 1]).tolist(),
    }
    if task == "segment":
        area = np.array([float(m.sum()) for m in det.masks], np.float64)
        cols["rle"] = [rle_encode(m) for m in det.masks]
    elif task == "obb":
        area = (det.obb[:, 2] * det.obb[:, 3]).astype(np.float64)
        for i, k in enumerate(("obb_cx", "obb_cy", "obb_w", "obb_h", "obb_angle")):
            cols[k] = det.obb[:, i].tolist()
        cols["obb_corners"] = obb_corners(det.obb).reshape(n, 8).tolist()
    else:
        area = (xyxy[:, 2] - xyxy[:, 0]) * (xyxy[:, 3] - xyxy[:, 1])
    cols["area_px"] = area.tolist()
    if pixel_size:
        side = float(pixel_size["value"])
        cols[area_column(pixel_size)] = (area * side * side).tolist()
    cols["image_width"] = [det.width] * n
    cols["image_height"] = [det.height] * n
    return cols


def coco_results(table: pd.DataFrame, task: str) -> list[dict[str, Any]]:
    """COCO results list from a detection table (see module docstring)."""
    out = []
    for r in table.itertuples(index=False):
        d = {
            "image_id": int(r.seq),
            "category_id": int(r.class_id) + 1,
            "score": round(float(r.score), 5),
            "bbox": [round(float(v), 2) for v in (r.x, r.y, r.w, r.h)],
        }
        if task == "segment":
            d["segmentation"] = {"size": [int(r.image_height), int(r.image_width)], "counts": r.rle}
        if task == "obb":
            d["obb"] = {
                "xywhr": [
                    float(r.obb_cx),
                    float(r.obb_cy),
                    float(r.obb_w),
                    float(r.obb_h),
                    float(r.obb_angle),
                ],
                "corners": [round(float(v), 2) for v in r.obb_corners],
            }
        out.append(d)
    return out


def coco_images(counts: pd.DataFrame, classes: list[str]) -> dict[str, Any]:
    images = [
        {
            "id": int(r.seq),
            "file_name": str(r.source),
            "width": int(r.image_width),
            "height": int(r.image_height),
        }
        for r in counts.itertuples(index=False)
    ]
    cats = [{"id": i + 1, "name": c} for i, c in enumerate(classes)]
    return {"images": images, "annotations": [], "categories": cats}


def write_json_compact(obj: Any, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, separators=(",", ":")))


PALETTE = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def overlay(image: np.ndarray, rows: pd.DataFrame, task: str) -> np.ndarray:
    """The image with its detections drawn (masks tinted, boxes or rotated boxes outlined, class and
    score written with OpenCV's built-in font: nothing is downloaded)."""
    out = image.copy()
    for r in rows.to_dict("records"):
        colour = PALETTE[int(r["class_id"]) % len(PALETTE)]
        x, y, w, h = (float(r[k]) for k in ("x", "y", "w", "h"))
        if task == "segment":
            m = rle_decode(r["rle"], int(r["image_height"]), int(r["image_width"]))
            out[m] = (0.55 * out[m] + 0.45 * np.array(colour)).astype(np.uint8)
        if task == "obb":
            pts = np.asarray(r["obb_corners"], np.float32).reshape(4, 2).round().astype(np.int32)
            cv2.polylines(out, [pts], True, colour, 2)
        else:
            cv2.rectangle(out, (int(x), int(y)), (int(x + w), int(y + h)), colour, 2)
        label = f"{r['class']} {float(r['score']):.2f}"
        org = (int(x), max(10, int(y) - 3))
        cv2.putText(out, label, org, cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, 1, cv2.LINE_AA)
    return out
