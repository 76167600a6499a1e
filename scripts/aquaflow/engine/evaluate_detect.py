"""Held-out evaluation of a detection model.

Benchmark of record for detect and segment: pycocotools COCOeval (IoU 0.50:0.05:0.95, 101 recall
points, maxDets 100, all areas) on our own predictions of the split (conf 0.001 for the curve).
Next to it: Ultralytics' own `val()` figures (the metric of record for obb, which pycocotools
cannot score), per-class AP, precision/recall/F1 at the configured confidence threshold (greedy
matching at IoU 0.5: box IoU, mask IoU for segment, rotated-box IoU for obb) and the mean IoU of
matched pairs (mask IoU for segment).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from aquaflow.backends.yolo import ultra
from aquaflow.backends.yolo.predict import Detector
from aquaflow.data import imaging
from aquaflow.engine.detect_metrics import (  # the metric functions, also reached from here
    _iou_matrix,  # noqa: F401
    coco_eval,
    coco_resampled,  # noqa: F401
    detection_intervals,
    detections_table,
    headline,
    per_class_table,
    threshold_metrics,
)
from aquaflow.io import read_json, write_json, write_tsv
from aquaflow.monitoring import tracking
from aquaflow.tasks import intervals
from aquaflow.tasks.detect import outputs
from aquaflow.tasks.detect.detections import Detections

log = logging.getLogger(__name__)
# the rows of eval/summary.tsv: headline figures under their report labels
SUMMARY_LABELS = {
    "mAP50": "mAP50",
    "mAP50_95": "mAP50-95",
    "precision": "precision",
    "recall": "recall",
    "mean_matched_iou": "mean matched IoU",
}
MAP_CONF = 0.001  # as Ultralytics val and the COCO protocol: score the whole precision-recall curve


def predict_split(det: Detector, images: list[Path], batch: int, tiling: dict | None) -> list[Detections]:
    found: list[Detections] = []
    for s in range(0, len(images), batch):
        arrays = [imaging.load(p).image for p in images[s : s + batch]]
        found += det.predict_tiled(arrays, tiling, batch) if tiling else det.predict(arrays)
    return found


def ultralytics_val(
    model, task: str, data_yaml: Path, split: str, spec: dict, device: str, work: Path
) -> dict:
    """Ultralytics' own validation figures (its metric of record for obb)."""
    m = model.val(
        data=str(data_yaml),
        split=split,
        imgsz=spec["imgsz"],
        batch=spec["predict"]["batch"],
        conf=MAP_CONF,
        iou=spec["predict"]["iou"],
        device=device,
        plots=False,
        verbose=False,
        project=str(Path(work).resolve()),
        name="val",
        exist_ok=True,
    )
    out = {
        "box": {
            "mAP50": float(m.box.map50),
            "mAP50_95": float(m.box.map),
            "precision": float(m.box.mp),
            "recall": float(m.box.mr),
        }
    }
    if task == "segment":
        out["mask"] = {
            "mAP50": float(m.seg.map50),
            "mAP50_95": float(m.seg.map),
            "precision": float(m.seg.mp),
            "recall": float(m.seg.mr),
        }
    names = m.names if isinstance(m.names, dict) else dict(enumerate(m.names))
    out["per_class_AP50_95"] = {names[int(c)]: float(m.box.maps[int(c)]) for c in m.box.ap_class_index}
    return out


def run(
    *,
    data_dir: str | Path,
    weights: str | Path,
    card_path: str | Path,
    spec: dict[str, Any],
    out: dict[str, str | Path],
    work: str | Path,
    ultralytics_dir: str | Path,
    mlflow_cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Predict the held-out split, score it, write metrics.json, COCO results and the tables; with
    `mlflow_cfg`, the headline figures go to the model's training run (tracking.log_evaluation)."""
    from aquaflow.tasks.detect.formats import read_yolo

    ultra.setup(ultralytics_dir)
    card = read_json(card_path)
    task, classes = card["task"], list(card["classes"])
    data_dir = Path(data_dir)
    ds = read_yolo(data_dir / "data.yaml", task)
    split = spec["evaluate"]["split"]
    if split == "auto":
        split = "test" if "test" in ds.splits else "val"
    sp = ds.splits[split]
    device = ultra.device_arg(spec["predict"]["device"])
    model = ultra.load(weights, task)
    det = Detector(model, task, {**spec["predict"], "imgsz": spec["imgsz"], "conf": MAP_CONF}, device)
    tiling = spec["predict"]["tiling"] if spec["evaluate"]["tiled"] else None
    found = predict_split(det, sp.images, spec["predict"]["batch"], tiling)
    table = detections_table(found, task, classes)
    results = outputs.coco_results(table, task) if len(table) else []
    outputs.write_json_compact(results, out["coco"])
    metrics: dict[str, Any] = {"task": task, "split": split, "images": len(sp.images), "model_id": card["id"]}
    gt_json = data_dir / f"coco_{split}.json"
    if task in ("detect", "segment"):
        metrics["coco_bbox"] = coco_eval(
            gt_json, [{k: v for k, v in r.items() if k != "segmentation"} for r in results], "bbox", classes
        )
        if task == "segment":
            metrics["coco_segm"] = coco_eval(gt_json, results, "segm", classes)
    conf = spec["predict"]["conf"]
    metrics["at_threshold"] = threshold_metrics(task, found, sp.labels, conf, classes)
    metrics["ultralytics"] = ultralytics_val(
        model, task, data_dir / "data.yaml", split, spec, device, Path(work)
    )
    record = "coco_segm" if task == "segment" else "coco_bbox" if task == "detect" else None
    if record:
        metrics["record"] = {
            "source": f"pycocotools {record[5:]}",
            "mAP50": metrics[record]["mAP50"],
            "mAP50_95": metrics[record]["mAP50_95"],
        }
    else:
        u = metrics["ultralytics"]["box"]
        metrics["record"] = {
            "source": "ultralytics obb (probiou)",
            "mAP50": u["mAP50"],
            "mAP50_95": u["mAP50_95"],
        }
    metrics["intervals"] = detection_intervals(
        task, found, sp.labels, conf, classes, gt_json, results, spec.get("intervals", {})
    )
    write_json(metrics, out["metrics"])
    write_tsv(per_class_table(metrics, classes), out["per_class"])
    found_iv = metrics["intervals"]
    rows = [
        (SUMMARY_LABELS[k], v, *found_iv.get(k, (None, None)))
        for k, v in headline(metrics).items()
        if k in SUMMARY_LABELS
    ]
    summary = pd.DataFrame(rows, columns=["metric", "value", "low", "high"])
    write_tsv(summary.assign(source=metrics["record"]["source"]), out["summary"])
    if mlflow_cfg is not None:
        figures = {
            **headline(metrics),
            **intervals.flat({k: found_iv[k] for k in headline(metrics) if k in found_iv}),
        }
        tracking.log_evaluation(
            card,
            {f"{split}_{k}": v for k, v in figures.items()},
            f"eval_{split}",
            mlflow_cfg,
            files=[out["metrics"], out["summary"], out["per_class"]],
        )
    log.info("evaluation: %s", metrics["record"])
    return metrics
