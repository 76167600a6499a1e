"""What the exports see of a detection campaign: one object per detection.

The rows come in the columns the EcoTaxa and Darwin Core writers read for every task (those of a
classification's predictions), so one writer serves classify, detect, segment and obb:

- `top1_label` / `top1_prob`: the detection's class and score;
- `object_name`: `<sample>_<image seq + 1, 6 digits>_<detection + 1, 3 digits>`, stable across reruns
  of the same inputs and unique in the campaign; `sample_id`: the object's sample (the sample
  column of the predictions, else the campaign's sample id);
- `crop_x`, `crop_y`, `crop_w`, `crop_h`: the detection's axis-aligned box in whole pixels of the
  source file (an input row that is itself a crop adds its offset): the object's image;
- features, pixels: `bx_px`, `by_px`, `width_px`, `height_px` (box), `box_area_px`;
  `mask_area_px` (segment); `obb_width_px`, `obb_height_px`, `obb_area_px`, `angle_deg` (obb);
  `image_width_px`, `image_height_px`. With a pixel size the lengths also in mm and the areas in
  mm² (`width_mm`, ..., `mask_area_mm2`) plus `process_pixel_size_mm`;
- the image and run columns as they are (seq, id, source, source_hex, inputs metadata, model_id,
  run_id).

`images(counts, ...)` gives every predicted image (zero detections included) with its sample and
pixel count: the area a sample's cover is measured against.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from aquaflow.tasks.detect.outputs import UNIT_SCALE, area_column, detection_schema

CROP = ("crop_x", "crop_y", "crop_w", "crop_h")
# detection-table columns (aquaflow.tasks.detect.outputs) the object columns replace; the image and
# run columns and the inputs' metadata pass through
PASSED = {"seq", "id", "source", "model_id", "run_id"}
REPLACED = {
    f.name for task in ("detect", "segment", "obb") for f in detection_schema(task, pa.schema([]), None)
} - PASSED | set(CROP)


def pixel_mm(pixel_size: dict[str, Any] | None) -> float | None:
    """Side of a pixel in mm from `detection.pixel_size` ({value, unit}), or None."""
    if not pixel_size:
        return None
    return float(pixel_size["value"]) * UNIT_SCALE[pixel_size["unit"]] / 1000.0


def samples(table: pd.DataFrame, sample_column: str, default_sample: str) -> pd.Series:
    """Each row's sample: its `sample_column` value, else the campaign's sample id."""
    if sample_column in table:
        return table[sample_column].astype(str)
    return pd.Series(default_sample, index=table.index, dtype=object)


def crop_boxes(det: pd.DataFrame) -> np.ndarray:
    """(n, 4) int boxes x, y, w, h in the source file: the float box widened to whole pixels,
    clipped to the predicted image, at least 1 x 1, moved by the input crop's offset if any."""
    w_img = det["image_width"].to_numpy(np.int64)
    h_img = det["image_height"].to_numpy(np.int64)
    x, y = det["x"].to_numpy(float), det["y"].to_numpy(float)
    x0 = np.clip(np.floor(x), 0, np.maximum(w_img - 1, 0)).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, np.maximum(h_img - 1, 0)).astype(np.int64)
    x1 = np.clip(np.ceil(x + det["w"].to_numpy(float)), x0 + 1, np.maximum(w_img, x0 + 1)).astype(np.int64)
    y1 = np.clip(np.ceil(y + det["h"].to_numpy(float)), y0 + 1, np.maximum(h_img, y0 + 1)).astype(np.int64)
    if all(c in det for c in CROP):  # the input row was a crop of a larger file (a FlowCam collage)
        given = det["crop_w"].fillna(-1).to_numpy(float) > 0
        x0 = x0 + np.where(given, det["crop_x"].fillna(0).to_numpy(np.int64), 0)
        y0 = y0 + np.where(given, det["crop_y"].fillna(0).to_numpy(np.int64), 0)
        x1 = x1 + np.where(given, det["crop_x"].fillna(0).to_numpy(np.int64), 0)
        y1 = y1 + np.where(given, det["crop_y"].fillna(0).to_numpy(np.int64), 0)
    return np.stack([x0, y0, x1 - x0, y1 - y0], axis=1)


def features(det: pd.DataFrame, task: str, mm: float | None) -> dict[str, np.ndarray]:
    """Size features of each detection in pixels and, with `mm` (pixel side), in mm / mm²."""
    w, h = det["w"].to_numpy(float), det["h"].to_numpy(float)
    px: dict[str, np.ndarray] = {
        "bx_px": det["x"].to_numpy(float),
        "by_px": det["y"].to_numpy(float),
        "width_px": w,
        "height_px": h,
        "box_area_px": w * h,
    }
    if task == "segment":
        px["mask_area_px"] = det["area_px"].to_numpy(float)
    if task == "obb":
        ow, oh = det["obb_w"].to_numpy(float), det["obb_h"].to_numpy(float)
        px |= {"obb_width_px": ow, "obb_height_px": oh, "obb_area_px": ow * oh}
    out = {k: v.round(3) for k, v in px.items()}
    if task == "obb":
        out["angle_deg"] = np.degrees(det["obb_angle"].to_numpy(float)).round(3)
    if mm:
        for key, v in px.items():
            if key in ("bx_px", "by_px"):
                continue
            if key.endswith("_area_px"):
                out[key.removesuffix("_px") + "_mm2"] = v * mm * mm
            else:
                out[key.removesuffix("_px") + "_mm"] = v * mm
    return out


def objects(
    det: pd.DataFrame,
    task: str,
    *,
    sample_column: str = "sample_id",
    default_sample: str = "",
    pixel_size: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """A detection table (aquaflow.tasks.detect.outputs) -> one export object per detection."""
    mm = pixel_mm(pixel_size)
    skip = REPLACED | ({area_column(pixel_size)} if pixel_size else set())
    skip |= {c for c in det.columns if c.startswith("area_") and c.endswith("2")}
    sample = samples(det, sample_column, default_sample)
    names = [
        f"{s}_{int(q) + 1:06d}_{int(k) + 1:03d}"
        for s, q, k in zip(sample, det["seq"], det["det"], strict=True)
    ]
    out = det[[c for c in det.columns if c not in skip]].copy()
    out["sample_id"] = sample.to_numpy()
    out["object_name"] = names
    out["top1_label"] = det["class"].astype(str).to_numpy()
    out["top1_prob"] = det["score"].astype(float).to_numpy()
    boxes = crop_boxes(det) if len(det) else np.zeros((0, 4), np.int64)
    for i, col in enumerate(CROP):
        out[col] = boxes[:, i]
    for key, values in features(det, task, mm).items():
        out[key] = values
    out["image_width_px"] = det["image_width"].to_numpy()
    out["image_height_px"] = det["image_height"].to_numpy()
    if mm:
        out["process_pixel_size_mm"] = mm
    return out.reset_index(drop=True)


def images(
    counts: pd.DataFrame, *, sample_column: str = "sample_id", default_sample: str = ""
) -> pd.DataFrame:
    """Every predicted image of a campaign (counts.parquet): its sample and its area in pixels."""
    area = counts["image_width"].to_numpy(float) * counts["image_height"].to_numpy(float)
    return pd.DataFrame(
        {"sample": samples(counts, sample_column, default_sample).to_numpy(), "area_px": area}
    )
