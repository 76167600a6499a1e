"""Held-out evaluation of a detection model.

Benchmark of record for detect and segment: pycocotools COCOeval (IoU 0.50:0.05:0.95, 101 recall
points, maxDets 100, all areas) on our own predictions of the split (conf 0.001 for the curve).
Next to it: Ultralytics' own `val()` figures (the metric of record for obb, which pycocotools
cannot score), per-class AP, precision/recall/F1 at the configured confidence threshold (greedy
matching at IoU 0.5: box IoU, mask IoU for segment, rotated-box IoU for obb) and the mean IoU of
matched pairs (mask IoU for segment).
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from aquaflow.backends.yolo import ultra
from aquaflow.backends.yolo.predict import Detector
from aquaflow.data import imaging
from aquaflow.io import read_json, write_json, write_tsv
from aquaflow.monitoring import tracking
from aquaflow.tasks.detect import outputs
from aquaflow.tasks.detect.detections import Detections, obb_corners

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


def detections_table(found: list[Detections], task: str, classes: list[str]) -> pd.DataFrame:
    frames = []
    for i, d in enumerate(found):
        cols = outputs.detection_rows(d, task, classes, None)
        frames.append(pd.DataFrame({"seq": [i] * len(d), **cols}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def coco_eval(gt_json: Path, results: list[dict], iou_type: str, classes: list[str]) -> dict[str, Any]:
    """COCOeval figures: mAP50-95, mAP50, mAP75, AR100 and per-class AP / AP50."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        if not results:
            return {"mAP50_95": 0.0, "mAP50": 0.0, "mAP75": 0.0, "AR100": 0.0, "per_class": {}}
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    prec = ev.eval["precision"]  # [T, R, K, A, M]
    per_class = {}
    for k, cat in enumerate(ev.params.catIds):
        p = prec[:, :, k, 0, -1]
        p50 = prec[0, :, k, 0, -1]
        per_class[classes[cat - 1]] = {
            "AP50_95": float(p[p > -1].mean()) if (p > -1).any() else float("nan"),
            "AP50": float(p50[p50 > -1].mean()) if (p50 > -1).any() else float("nan"),
        }
    s = ev.stats
    return {
        "mAP50_95": float(s[0]),
        "mAP50": float(s[1]),
        "mAP75": float(s[2]),
        "AR100": float(s[8]),
        "per_class": per_class,
    }


def _iou_matrix(task: str, gt: list, dt: list, h: int, w: int) -> np.ndarray:
    if not gt or not dt:
        return np.zeros((len(dt), len(gt)))
    if task == "segment":
        from pycocotools import mask as mask_utils

        enc = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in dt]
        genc = [mask_utils.encode(np.asfortranarray(m.astype(np.uint8))) for m in gt]
        return mask_utils.iou(enc, genc, [0] * len(gt))
    if task == "obb":
        out = np.zeros((len(dt), len(gt)))
        for i, a in enumerate(dt):
            for j, b in enumerate(gt):
                inter, _ = cv2.intersectConvexConvex(a, b)
                union = cv2.contourArea(a) + cv2.contourArea(b) - inter
                out[i, j] = inter / union if union > 0 else 0.0
        return out
    a, b = np.asarray(dt, np.float64), np.asarray(gt, np.float64)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area = lambda z: (z[:, 2] - z[:, 0]) * (z[:, 3] - z[:, 1])  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def _gt_shapes(task: str, labels, h: int, w: int) -> tuple[list, np.ndarray]:
    shapes, cls = [], np.array([lab.cls for lab in labels], np.int64)
    for lab in labels:
        if task == "segment":
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [(lab.coords * [w, h]).round().astype(np.int32)], 1)
            shapes.append(m.astype(bool))
        elif task == "obb":
            shapes.append((lab.coords * [w, h]).astype(np.float32))
        else:
            shapes.append(lab.xyxy() * [w, h, w, h])
    return shapes, cls


def _dt_shapes(task: str, d: Detections) -> list:
    if task == "segment":
        return list(d.masks)
    if task == "obb":
        return list(obb_corners(d.obb)) if len(d) else []
    return list(d.xyxy)


def threshold_metrics(task, found, labels, conf, classes, iou_thr=0.5) -> dict[str, Any]:
    """Precision, recall, F1 and mean matched IoU at score >= conf (greedy, per class, per image)."""
    tp = np.zeros(len(classes), np.int64)
    fp = np.zeros(len(classes), np.int64)
    fn = np.zeros(len(classes), np.int64)
    ious: list[float] = []
    for d, labs in zip(found, labels, strict=True):
        keep = np.flatnonzero(d.score >= conf)
        d = d.take(keep[np.argsort(-d.score[keep], kind="stable")])
        gts, gcls = _gt_shapes(task, labs, d.height, d.width)
        dts = _dt_shapes(task, d)
        iou = _iou_matrix(task, gts, dts, d.height, d.width)
        used = np.zeros(len(gts), bool)
        for i in range(len(d)):
            c = d.cls[i]
            cand = np.flatnonzero(~used & (gcls == c))
            j = cand[np.argmax(iou[i, cand])] if len(cand) else -1
            if j >= 0 and iou[i, j] >= iou_thr:
                used[j] = True
                tp[c] += 1
                ious.append(float(iou[i, j]))
            else:
                fp[c] += 1
        for j in np.flatnonzero(~used):
            fn[gcls[j]] += 1

    def prf(t, f, n):
        p = t / (t + f) if t + f else 0.0
        r = t / (t + n) if t + n else 0.0
        return {
            "precision": p,
            "recall": r,
            "f1": 2 * p * r / (p + r) if p + r else 0.0,
            "tp": int(t),
            "fp": int(f),
            "fn": int(n),
        }

    return {
        "conf": conf,
        "iou_threshold": iou_thr,
        "all": prf(tp.sum(), fp.sum(), fn.sum()),
        "per_class": {c: prf(tp[k], fp[k], fn[k]) for k, c in enumerate(classes)},
        "mean_matched_iou": float(np.mean(ious)) if ious else 0.0,
        "iou_kind": {"segment": "mask", "obb": "rotated box"}.get(task, "box"),
    }


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
    metrics["at_threshold"] = threshold_metrics(task, found, sp.labels, spec["predict"]["conf"], classes)
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
    write_json(metrics, out["metrics"])
    write_tsv(per_class_table(metrics, classes), out["per_class"])
    rows = [(SUMMARY_LABELS[k], v) for k, v in headline(metrics).items() if k in SUMMARY_LABELS]
    summary = pd.DataFrame(rows, columns=["metric", "value"])
    write_tsv(summary.assign(source=metrics["record"]["source"]), out["summary"])
    if mlflow_cfg is not None:
        tracking.log_evaluation(
            card,
            {f"{split}_{k}": v for k, v in headline(metrics).items()},
            f"eval_{split}",
            mlflow_cfg,
            files=[out["metrics"], out["summary"], out["per_class"]],
        )
    log.info("evaluation: %s", metrics["record"])
    return metrics


def headline(metrics: dict[str, Any]) -> dict[str, float]:
    """The figures of record (mAP50, mAP50-95) and those at the configured threshold."""
    at = metrics["at_threshold"]
    return {
        "mAP50": metrics["record"]["mAP50"],
        "mAP50_95": metrics["record"]["mAP50_95"],
        **{k: at["all"][k] for k in ("precision", "recall", "f1")},
        "mean_matched_iou": at["mean_matched_iou"],
    }


def per_class_table(metrics: dict[str, Any], classes: list[str]) -> pd.DataFrame:
    rows = []
    for c in classes:
        r = {"class": c}
        for key in ("coco_bbox", "coco_segm"):
            if key in metrics:
                pc = metrics[key]["per_class"].get(c, {})
                r[f"{key}_AP50"] = pc.get("AP50")
                r[f"{key}_AP50_95"] = pc.get("AP50_95")
        r["ultralytics_AP50_95"] = metrics["ultralytics"]["per_class_AP50_95"].get(c)
        at = metrics["at_threshold"]["per_class"][c]
        r.update({k: at[k] for k in ("precision", "recall", "f1", "tp", "fp", "fn")})
        rows.append(r)
    return pd.DataFrame(rows)
