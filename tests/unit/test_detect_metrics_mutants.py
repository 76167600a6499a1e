"""Detection metrics pinned to exact values without a model: ground-truth shapes at image scale, the
greedy matching's arrays, precision/recall/F1 of any draw of images, COCOeval per IoU threshold and
class, the resampled COCO mAP against COCOeval on the drawn images, the bootstrap intervals against
their definition, the headline and the per-class table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aquaflow.engine import detect_metrics as dm
from aquaflow.tasks import intervals
from aquaflow.tasks.detect.detections import Detections
from aquaflow.tasks.detect.formats import Label

CLASSES = ["fish", "coral", "shell"]


def dets(rows, h=100, w=100) -> Detections:
    """Detections from (cls, score, x0, y0, x1, y1) rows."""
    a = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(
        a[:, 2:].astype(np.float32), a[:, 1].astype(np.float32), a[:, 0].astype(np.int64), None, None, h, w
    )


def box(cls, x0, y0, x1, y1, w=100, h=100) -> Label:
    return Label(cls, "box", np.array([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]))


def coco_truth(path, labels_per_image, w=100, h=100):
    """A COCO ground-truth file of box labels, image ids 0.., categories 1.. in CLASSES order."""
    anns = []
    for i, labels in enumerate(labels_per_image):
        for lab in labels:
            x0, y0, x1, y1 = lab.xyxy() * [w, h, w, h]
            anns.append(
                {"id": len(anns) + 1, "image_id": i, "category_id": lab.cls + 1, "iscrowd": 0,
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0)}
            )  # fmt: skip
    images = [
        {"id": i, "file_name": f"{i}.png", "width": w, "height": h} for i in range(len(labels_per_image))
    ]
    categories = [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path


def coco_results(found):
    return [
        {"image_id": i, "category_id": int(c) + 1, "score": float(s),
         "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]}
        for i, d in enumerate(found)
        for (x0, y0, x1, y1), s, c in zip(d.xyxy, d.score, d.cls, strict=True)
    ]  # fmt: skip


def test_iou_of_sub_pixel_boxes_and_of_degenerate_rotated_boxes():
    tiny = [np.array([0.0, 0.0, 0.5, 0.5])]
    assert dm._iou_matrix("detect", tiny, tiny, 1, 1).tolist() == [[1.0]]
    point = np.zeros((4, 2), np.float32)
    assert dm._iou_matrix("obb", [point], [point], 10, 10).tolist() == [[0.0]]
    assert dm._iou_matrix("obb", [], [point], 10, 10).shape == (1, 0)
    apart = [np.array([5.0, 0, 6, 1]), np.array([0.0, 5, 2, 6])]  # apart in x only, in y only
    assert dm._iou_matrix("detect", [np.array([0.0, 0, 2, 1])], apart, 10, 10).tolist() == [[0.0], [0.0]]


def test_ground_truth_shapes_at_image_scale():
    labels = [box(1, 10, 20, 30, 60, w=200, h=100), box(0, 0, 0, 50, 100, w=200, h=100)]
    shapes, cls = dm._gt_shapes("detect", labels, 100, 200)
    assert np.allclose(shapes, [[10, 20, 30, 60], [0, 0, 50, 100]]) and cls.tolist() == [1, 0]
    assert cls.dtype == np.int64
    corners = np.array([[0.1, 0.2], [0.5, 0.2], [0.5, 0.6], [0.1, 0.6]])
    (obb,), _ = dm._gt_shapes("obb", [Label(0, "obb", corners)], 50, 200)
    assert obb.dtype == np.float32 and obb.tolist() == [[20, 10], [100, 10], [100, 30], [20, 30]]
    (mask,), cls = dm._gt_shapes("segment", [Label(2, "polygon", corners)], 50, 200)
    assert mask.dtype == bool and mask.shape == (50, 200) and cls.tolist() == [2]
    ys, xs = np.nonzero(mask)
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (10, 30, 20, 100) and mask.sum() == 21 * 81
    assert dm._gt_shapes("detect", [], 10, 10)[1].shape == (0,)


def test_detection_shapes_per_task():
    d = dets([(0, 0.9, 1, 2, 3, 4)])
    assert [s.tolist() for s in dm._dt_shapes("detect", d)] == [[1, 2, 3, 4]]
    masks = [np.ones((2, 2), bool)]
    seg = Detections(d.xyxy, d.score, d.cls, None, masks, 2, 2)
    assert dm._dt_shapes("segment", seg) == masks
    obb = Detections(d.xyxy, d.score, d.cls, np.array([[10, 10, 4, 2, 0]], np.float32), None, 20, 20)
    (corners,) = dm._dt_shapes("obb", obb)
    assert sorted(map(tuple, corners.tolist())) == [(8, 9), (8, 11), (12, 9), (12, 11)]
    assert dm._dt_shapes("obb", Detections.empty("obb", 20, 20)) == []


def test_matches_arrays_per_image_and_class():
    """Image 0: a detection exactly at conf and exactly at IoU 0.5 counts; of two equal scores the
    first listed is matched first; the better of two candidates of its class is taken; two fish
    missed in one image count twice. Image 1: nothing found."""
    labels = [
        [box(0, 0, 0, 10, 10), box(0, 50, 50, 60, 60), box(1, 20, 20, 40, 40), box(0, 80, 80, 90, 90)],
        [box(0, 0, 0, 10, 10), box(0, 20, 0, 30, 10)],
    ]
    found = [
        dets(
            [
                (1, 0.25, 20, 20, 40, 30),  # IoU 0.5 with the coral, score == conf
                (0, 0.7, 0, 0, 10, 8),  # IoU 0.8 with fish 0: the first of the two at 0.7
                (0, 0.7, 0, 0, 10, 10),  # IoU 1 with fish 0, taken: a false alarm
                (0, 0.249, 50, 50, 60, 60),  # below conf: dropped, fish 1 missed
            ]
        ),
        dets([]),
    ]
    m = dm._matches("detect", found, labels, 0.25, 3, 0.5)
    assert set(m) == {"tp", "fp", "fn", "iou_sum", "iou_n"}
    assert m["tp"].tolist() == [[1, 1, 0], [0, 0, 0]]
    assert m["fp"].tolist() == [[1, 0, 0], [0, 0, 0]]
    assert m["fn"].tolist() == [[2, 0, 0], [2, 0, 0]]
    assert m["iou_sum"].tolist() == pytest.approx([1.3, 0.0]) and m["iou_n"].tolist() == [2, 0]
    assert m["tp"].dtype == m["iou_n"].dtype == np.int64
    # the better candidate: a detection between two fish takes the one it overlaps more
    between = [dets([(0, 0.9, 0, 0, 10, 10)])]
    two = [[box(0, 2, 0, 12, 10), box(0, 0, 1, 10, 11)]]
    m = dm._matches("detect", between, two, 0.5, 1, 0.5)
    assert m["iou_sum"].tolist() == pytest.approx([90 / 110]) and m["fn"].tolist() == [[1]]
    strict = dm._matches("detect", found, labels, 0.25, 3, 0.51)
    assert strict["tp"].tolist() == [[1, 0, 0], [0, 0, 0]] and strict["fp"].tolist() == [[1, 1, 0], [0, 0, 0]]
    with pytest.raises(ValueError):
        dm._matches("detect", found, labels[:1], 0.25, 3, 0.5)


def test_precision_recall_f1_and_their_zero_cases():
    assert dm._prf(1, 1, 2) == {
        "precision": 0.5, "recall": pytest.approx(1 / 3), "f1": pytest.approx(0.4), "tp": 1, "fp": 1, "fn": 2
    }  # fmt: skip
    assert dm._prf(0, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert dm._prf(0, 3, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 3, "fn": 0}
    assert dm._prf(0, 0, 4)["recall"] == 0.0 and dm._prf(2, 0, 0)["f1"] == 1.0
    counts = dm._prf(np.int64(1), np.int64(1), np.int64(1))
    assert [type(counts[k]) for k in ("tp", "fp", "fn")] == [int, int, int]


def test_figures_of_a_draw_of_images_with_repeats():
    m = {
        "tp": np.array([[1, 0], [0, 2], [3, 0]]),
        "fp": np.array([[0, 1], [1, 0], [0, 0]]),
        "fn": np.array([[1, 0], [0, 1], [0, 0]]),
        "iou_sum": np.array([0.5, 1.8, 2.7]),
        "iou_n": np.array([1, 2, 3]),
    }
    at = dm._at_threshold(m, np.array([0, 0, 1]))
    assert at["all"] == dm._prf(4, 3, 3)
    assert at["per_class"] == [dm._prf(2, 1, 2), dm._prf(2, 2, 1)]
    assert at["mean_matched_iou"] == pytest.approx(2.8 / 4)
    whole = dm._at_threshold(m)
    assert whole["all"] == dm._prf(6, 2, 2) and whole["mean_matched_iou"] == pytest.approx(5.0 / 6)
    none = dm._at_threshold({**m, "iou_n": np.zeros(3, int)}, np.array([2]))
    assert none["mean_matched_iou"] == 0.0
    found = [dets([(0, 0.9, 0, 0, 10, 10)]), dets([(0, 0.9, 0, 0, 10, 7)])]
    labels = [[box(0, 0, 0, 10, 10)], [box(0, 0, 0, 10, 10)]]
    t = dm.threshold_metrics("detect", found, labels, 0.5, CLASSES)  # default IoU threshold 0.5
    assert (t["all"]["tp"], t["iou_threshold"], list(t["per_class"])) == (2, 0.5, CLASSES)
    assert t["mean_matched_iou"] == pytest.approx(0.85)


def test_coco_eval_figures_per_iou_threshold_and_class(tmp_path):
    """A medium fish found at IoU 1600/2240 = 0.714 (counts at IoU 0.50..0.70: 5 of 10 thresholds),
    a coral at IoU 27.5/52.5 = 0.524 (at 0.50 only), no shell in the truth (its AP is nan)."""
    gt = coco_truth(tmp_path / "gt.json", [[box(0, 10, 10, 50, 50), box(1, 55, 55, 95, 95)]])
    results = coco_results([dets([(0, 0.9, 10, 10, 50, 66), (1, 0.8, 67.5, 55, 107.5, 95)])])
    m = dm.coco_eval(gt, results, "bbox", CLASSES)
    assert m["mAP50"] == pytest.approx(1.0) and m["mAP50_95"] == pytest.approx(0.3)
    assert m["mAP75"] == 0.0 and m["AR100"] == pytest.approx(0.3)
    assert m["per_class"]["fish"] == {"AP50_95": pytest.approx(0.5), "AP50": pytest.approx(1.0)}
    assert m["per_class"]["coral"] == {"AP50_95": pytest.approx(0.1), "AP50": pytest.approx(1.0)}
    shell = m["per_class"]["shell"]
    assert list(shell) == ["AP50_95", "AP50"] and np.isnan(shell["AP50_95"]) and np.isnan(shell["AP50"])
    assert list(m) == ["mAP50_95", "mAP50", "mAP75", "AR100", "per_class"]


def _draw(tmp_path, labels, found, idx):
    """The ground truth and results of the drawn images as a split of their own (repeats renamed)."""
    gt = coco_truth(tmp_path / f"gt_{'_'.join(map(str, idx))}.json", [labels[i] for i in idx])
    return gt, coco_results([found[i] for i in idx])


def _case():
    labels = [
        [box(0, 10, 10, 50, 50), box(1, 55, 55, 95, 95)],
        [box(0, 20, 20, 60, 60)],
        [box(1, 0, 0, 40, 40), box(0, 50, 10, 90, 50)],
        [],
    ]
    found = [
        dets([(0, 0.9, 10, 10, 50, 66), (1, 0.6, 67.5, 55, 107.5, 95), (1, 0.3, 0, 60, 30, 90)]),
        dets([(0, 0.8, 20, 20, 60, 60), (0, 0.7, 0, 0, 30, 30)]),
        dets([(1, 0.95, 0, 0, 40, 46), (0, 0.4, 50, 14, 90, 54)]),
        dets([(1, 0.5, 60, 60, 90, 90)]),
    ]
    return labels, found


def test_resampled_map_is_cocoeval_of_the_drawn_images(tmp_path):
    labels, found = _case()
    gt = coco_truth(tmp_path / "gt.json", labels)
    resampled = dm.coco_resampled(gt, coco_results(found), "bbox")
    seen = []
    for idx in ([0, 1, 2, 3], [0, 0, 2], [2, 1, 1, 3], [1]):
        want = dm.coco_eval(*_draw(tmp_path, labels, found, idx), "bbox", CLASSES)
        got = resampled(np.array(idx))
        assert got == {k: pytest.approx(want[k]) for k in ("mAP50_95", "mAP50")}, idx
        seen.append((got["mAP50"], got["mAP50_95"]))
    assert len(set(seen)) == 4 and all(0 < a95 < a50 <= 1 for a50, a95 in seen), seen
    assert resampled(np.array([3, 3])) == {"mAP50_95": -1.0, "mAP50": -1.0}  # no truth drawn


def test_detection_intervals_are_the_bootstrap_of_the_figures_of_each_draw(tmp_path):
    labels, found = _case()
    gt = coco_truth(tmp_path / "gt.json", labels)
    results = coco_results(found)
    conf = 0.45
    iv = dm.detection_intervals("detect", found, labels, conf, CLASSES, gt, results, {"resamples": 25})

    def figures(idx):
        d, labs = [found[i] for i in idx], [labels[i] for i in idx]
        coco = dm.coco_eval(*_draw(tmp_path, labels, found, list(idx)), "bbox", CLASSES)
        at = dm.threshold_metrics("detect", d, labs, conf, CLASSES, iou_thr=0.5)
        out = {"mAP50_95": coco["mAP50_95"], "mAP50": coco["mAP50"]}
        out |= {k: at["all"][k] for k in ("precision", "recall", "f1")}
        out["mean_matched_iou"] = at["mean_matched_iou"]
        for c in CLASSES:
            out |= {f"{k}/{c}": at["per_class"][c][k] for k in ("precision", "recall", "f1")}
        return out

    want = intervals.bootstrap(figures, len(found), resamples=25, level=0.95, seed=0)
    assert iv["method"] == "percentile bootstrap over test images, each with all its objects"
    assert (iv["resamples"], iv["level"], iv["seed"]) == (25, 0.95, 0)
    assert list(iv)[4:] == list(want)
    for k, (lo, hi) in want.items():
        assert iv[k] == [pytest.approx(lo), pytest.approx(hi)], k
    assert iv["mAP50"][0] < iv["mAP50"][1] and iv["recall"][0] < iv["recall"][1]
    # obb has no COCO record; nor has a split without results; resamples 0: no interval
    no_coco = dm.detection_intervals("detect", found, labels, conf, CLASSES, gt, [], {"resamples": 25})
    assert list(no_coco)[4:] == list(want)[2:]
    assert no_coco["recall"] == iv["recall"]
    off = dm.detection_intervals("detect", found, labels, conf, CLASSES, gt, results, {"resamples": 0})
    assert off == {"method": iv["method"], "resamples": 0, "level": 0.95, "seed": 0}


def test_headline_and_per_class_table_exact_rows():
    at = {
        "all": {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "tp": 1, "fp": 1, "fn": 3},
        "mean_matched_iou": 0.8,
        "per_class": {
            "fish": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "tp": 1, "fp": 1, "fn": 1},
            "coral": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 2},
        },
    }
    metrics = {
        "record": {"mAP50": 0.6, "mAP50_95": 0.3},
        "at_threshold": at,
        "coco_bbox": {"per_class": {"fish": {"AP50": 0.9, "AP50_95": 0.4}}},
        "coco_segm": {"per_class": {"fish": {"AP50": 0.7, "AP50_95": 0.2}, "coral": {"AP50": 0.1}}},
        "ultralytics": {"per_class_AP50_95": {"coral": 0.05}},
        "intervals": {"precision/fish": [0.1, 0.9], "f1/coral": [0.0, 0.2]},
    }
    assert dm.headline(metrics) == {
        "mAP50": 0.6, "mAP50_95": 0.3, "precision": 0.5, "recall": 0.25, "f1": 1 / 3, "mean_matched_iou": 0.8
    }  # fmt: skip
    table = dm.per_class_table(metrics, ["fish", "coral"])
    rows = [{k: None if pd.isna(v) else v for k, v in r.items()} for r in table.to_dict(orient="records")]
    nothing = {f"{k}_{e}": None for k in ("recall", "f1") for e in ("low", "high")}
    assert rows[0] == {
        "class": "fish", "coco_bbox_AP50": 0.9, "coco_bbox_AP50_95": 0.4, "coco_segm_AP50": 0.7,
        "coco_segm_AP50_95": 0.2, "ultralytics_AP50_95": None, **at["per_class"]["fish"],
        "precision_low": 0.1, "precision_high": 0.9, **nothing,
    }  # fmt: skip
    assert rows[1]["coco_bbox_AP50"] is None and rows[1]["coco_segm_AP50"] == 0.1
    assert rows[1]["coco_segm_AP50_95"] is None and rows[1]["ultralytics_AP50_95"] == 0.05
    assert (rows[1]["f1_low"], rows[1]["f1_high"], rows[1]["precision_low"]) == (0.0, 0.2, None)
    plain = dm.per_class_table({**metrics, "intervals": {}}, ["coral"])
    assert "coco_bbox_AP50" in plain and plain["precision_low"].isna().all()
    bare = {k: v for k, v in metrics.items() if k not in ("coco_bbox", "coco_segm", "intervals")}
    assert list(dm.per_class_table(bare, ["fish"])) == [
        "class", "ultralytics_AP50_95", "precision", "recall", "f1", "tp", "fp", "fn",
        "precision_low", "precision_high", "recall_low", "recall_high", "f1_low", "f1_high",
    ]  # fmt: skip


def test_detections_table_rows_per_image_in_order():
    found = [dets([(1, 0.9, 10, 10, 30, 30)]), dets([]), dets([(0, 0.8, 0, 0, 5, 5), (2, 0.4, 1, 1, 2, 3)])]
    table = dm.detections_table(found, "detect", CLASSES)
    assert table.index.tolist() == [0, 1, 2] and table["seq"].tolist() == [0, 2, 2]
    assert table["class"].tolist() == ["coral", "fish", "shell"] and table["det"].tolist() == [0, 0, 1]
    assert table["h"].tolist() == [20.0, 5.0, 2.0] and table.columns[0] == "seq"
    assert dm.detections_table([], "detect", CLASSES).shape == (0, 0)


def test_rotated_boxes_table_and_intervals_without_a_coco_record(tmp_path):
    """obb: the table carries the rotated boxes; the intervals match rotated boxes (no COCO mAP)."""
    corners = np.array([[0.1, 0.1], [0.3, 0.1], [0.3, 0.3], [0.1, 0.3]])
    labels = [[Label(0, "obb", corners)], [Label(0, "obb", corners + 0.4)], [Label(1, "obb", corners)]]
    obb = [[20, 20, 20, 20, 0], [60, 60, 20, 20, 0], [80, 80, 10, 10, 0]]
    found = [
        Detections(np.zeros((1, 4), np.float32), np.array([0.9], np.float32), np.array([c]),
                   np.array([o], np.float32), None, 100, 100)
        for c, o in zip([0, 0, 1], obb, strict=True)
    ]  # fmt: skip
    table = dm.detections_table(found, "obb", CLASSES)
    assert table["obb_cx"].tolist() == [20.0, 60.0, 80.0] and table["seq"].tolist() == [0, 1, 2]
    gt = coco_truth(tmp_path / "gt.json", [[box(0, 10, 10, 30, 30)]] * 3)
    iv = dm.detection_intervals("obb", found, labels, 0.5, CLASSES, gt, [{"image_id": 0}], {"resamples": 20})
    assert "mAP50" not in iv and iv["recall"][1] == 1.0 and iv["recall"][0] < 1.0
    assert dm.threshold_metrics("obb", found, labels, 0.5, CLASSES)["all"]["tp"] == 2
