"""Detection metrics from predictions and ground truth, without a model: box, rotated-box and mask
IoU, greedy matching at a confidence threshold (precision, recall, F1, mean matched IoU), pycocotools
COCOeval (whole split and any resampled draw of its images), bootstrap intervals and the per-class
table. `aquaflow.engine.evaluate_detect` predicts the split and feeds them.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from aquaflow.tasks import intervals
from aquaflow.tasks.detect import outputs
from aquaflow.tasks.detect.detections import Detections, obb_corners


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


def _matches(task, found, labels, conf, n_classes, iou_thr) -> dict[str, np.ndarray]:
    """Per image: tp, fp, fn per class [images, classes] and the sum and count of matched IoUs, at
    score >= conf (greedy by score, per class)."""
    n = len(found)
    out = {k: np.zeros((n, n_classes), np.int64) for k in ("tp", "fp", "fn")}
    out |= {"iou_sum": np.zeros(n), "iou_n": np.zeros(n, np.int64)}
    for m, (d, labs) in enumerate(zip(found, labels, strict=True)):
        keep = np.flatnonzero(d.score >= conf)
        d = d.take(keep[np.argsort(-d.score[keep], kind="stable")])
        gts, gcls = _gt_shapes(task, labs, d.height, d.width)
        iou = _iou_matrix(task, gts, _dt_shapes(task, d), d.height, d.width)
        used = np.zeros(len(gts), bool)
        for i in range(len(d)):
            c = d.cls[i]
            cand = np.flatnonzero(~used & (gcls == c))
            j = cand[np.argmax(iou[i, cand])] if len(cand) else -1
            if j >= 0 and iou[i, j] >= iou_thr:
                used[j] = True
                out["tp"][m, c] += 1
                out["iou_sum"][m] += iou[i, j]
                out["iou_n"][m] += 1
            else:
                out["fp"][m, c] += 1
        np.add.at(out["fn"][m], gcls[~used], 1)
    return out


def _prf(t, f, n) -> dict[str, Any]:
    p = t / (t + f) if t + f else 0.0
    r = t / (t + n) if t + n else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    return {"precision": p, "recall": r, "f1": f1, "tp": int(t), "fp": int(f), "fn": int(n)}


def _at_threshold(m: dict[str, np.ndarray], idx: np.ndarray | slice = slice(None)) -> dict[str, Any]:
    """Precision/recall/F1 (all, per class index) and mean matched IoU of the images `idx`."""
    tp, fp, fn = (m[k][idx].sum(axis=0) for k in ("tp", "fp", "fn"))
    matched = m["iou_n"][idx].sum()
    return {
        "all": _prf(tp.sum(), fp.sum(), fn.sum()),
        "per_class": [_prf(tp[k], fp[k], fn[k]) for k in range(len(tp))],
        "mean_matched_iou": float(m["iou_sum"][idx].sum() / matched) if matched else 0.0,
    }


def threshold_metrics(task, found, labels, conf, classes, iou_thr=0.5) -> dict[str, Any]:
    """Precision, recall, F1 and mean matched IoU at score >= conf (greedy, per class, per image)."""
    at = _at_threshold(_matches(task, found, labels, conf, len(classes), iou_thr))
    return {
        "conf": conf,
        "iou_threshold": iou_thr,
        "all": at["all"],
        "per_class": dict(zip(classes, at["per_class"], strict=True)),
        "mean_matched_iou": at["mean_matched_iou"],
        "iou_kind": {"segment": "mask", "obb": "rotated box"}.get(task, "box"),
    }


def coco_resampled(gt_json: Path, results: list[dict], iou_type: str) -> Callable[[np.ndarray], dict]:
    """mAP50 and mAP50-95 (all areas, 100 detections) of any draw of the split's images, with
    repeats: COCOeval matches each image once, every draw re-accumulates the matches it holds."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_json))
        ev = COCOeval(gt, gt.loadRes(results), iou_type)
        ev.evaluate()
    n_img, n_area = len(ev._paramsEval.imgIds), len(ev._paramsEval.areaRng)
    per_class = [
        ev.evalImgs[k * n_area * n_img : k * n_area * n_img + n_img] for k in range(len(ev.params.catIds))
    ]
    for params in (ev.params, ev._paramsEval):  # area "all" and the last maxDets only
        params.areaRng, params.areaRngLbl, params.maxDets = (
            params.areaRng[:1],
            params.areaRngLbl[:1],
            params.maxDets[-1:],
        )

    def figures(idx: np.ndarray) -> dict[str, float]:
        ev.evalImgs = [images[i] for images in per_class for i in idx]
        ev.params.imgIds = ev._paramsEval.imgIds = list(range(len(idx)))
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
        prec = ev.eval["precision"][:, :, :, 0, 0]  # [iou thresholds, recall points, classes]
        return {
            "mAP50_95": float(prec[prec > -1].mean()) if (prec > -1).any() else -1.0,
            "mAP50": float(prec[0][prec[0] > -1].mean()) if (prec[0] > -1).any() else -1.0,
        }

    return figures


def detection_intervals(
    task, found, labels, conf, classes, gt_json: Path, results: list[dict], settings: dict
) -> dict[str, Any]:
    """Bootstrap intervals over images (each with all its objects) of the figures of record (mAP50,
    mAP50-95 from pycocotools; none for obb, whose record is Ultralytics' val), of precision,
    recall, F1 and mean matched IoU at `conf`, and per class (`precision/<class>` …)."""
    cfg = {**intervals.DEFAULTS, **settings}
    matches = _matches(task, found, labels, conf, len(classes), 0.5)
    record = {"detect": "bbox", "segment": "segm"}.get(task)
    coco = coco_resampled(gt_json, results, record) if record and results else None

    def figures(idx: np.ndarray) -> dict[str, float]:
        at = _at_threshold(matches, idx)
        out = coco(idx) if coco else {}
        out |= {k: at["all"][k] for k in ("precision", "recall", "f1")}
        out["mean_matched_iou"] = at["mean_matched_iou"]
        for c, pc in zip(classes, at["per_class"], strict=True):
            out |= {f"{k}/{c}": pc[k] for k in ("precision", "recall", "f1")}
        return out

    found_iv = intervals.bootstrap(figures, len(found), **cfg) if cfg["resamples"] else {}
    return intervals.described(found_iv, cfg, "test images, each with all its objects")


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
        for k in ("precision", "recall", "f1"):
            r[f"{k}_low"], r[f"{k}_high"] = metrics.get("intervals", {}).get(f"{k}/{c}", (None, None))
        rows.append(r)
    return pd.DataFrame(rows)
