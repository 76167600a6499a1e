"""Detection evaluation: box / rotated-box / mask IoU, greedy matching at a threshold, COCOeval."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aquaflow.engine import evaluate_detect as ev
from aquaflow.tasks.detect.detections import Detections
from aquaflow.tasks.detect.formats import Label

CLASSES = ["fish", "coral"]


def box_label(cls, x0, y0, x1, y1, w=100, h=100):
    return Label(cls, "box", np.array([(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h]))


def dets(rows, h=100, w=100):
    """Detections from (cls, score, x0, y0, x1, y1) rows."""
    a = np.array(rows, np.float64).reshape(-1, 6)
    return Detections(
        a[:, 2:].astype(np.float32), a[:, 1].astype(np.float32), a[:, 0].astype(np.int64), None, None, h, w
    )


def test_box_iou_exact_values_dt_by_gt():
    gt = [np.array([1.0, 0, 3, 1]), np.array([0.0, 0, 2, 1])]
    dt = [np.array([0.0, 0, 2, 1]), np.array([5.0, 5, 6, 6]), np.array([0.0, 0.5, 2, 1.5])]
    iou = ev._iou_matrix("detect", gt, dt, 10, 10)
    assert iou.shape == (3, 2)
    np.testing.assert_allclose(iou[0], [1 / 3, 1.0])  # overlapping by a third; identical
    np.testing.assert_allclose(iou[1], [0.0, 0.0])  # disjoint
    np.testing.assert_allclose(iou[2], [0.5 / 3.5, 1 / 3])  # half a unit in y
    assert ev._iou_matrix("detect", [], dt, 10, 10).shape == (3, 0)
    assert ev._iou_matrix("detect", gt, [], 10, 10).shape == (0, 2)


def test_rotated_box_and_mask_iou_exact_values():
    square = lambda x0, y0, s: np.array([[x0, y0], [x0 + s, y0], [x0 + s, y0 + s], [x0, y0 + s]], np.float32)  # noqa: E731
    iou = ev._iou_matrix(
        "obb", [square(0, 0, 10)], [square(0, 0, 10), square(5, 0, 10), square(20, 20, 4)], 40, 40
    )
    np.testing.assert_allclose(iou[:, 0], [1.0, 50 / 150, 0.0], atol=1e-6)
    m1 = np.zeros((20, 20), bool)
    m1[:10, :10] = True
    m2 = np.zeros((20, 20), bool)
    m2[:10, 5:15] = True
    np.testing.assert_allclose(ev._iou_matrix("segment", [m1], [m1, m2], 20, 20)[:, 0], [1.0, 1 / 3])


def test_threshold_metrics_on_a_known_case():
    """Image 1: fish A, fish B, coral C. Detections (score order): fish on C (wrong class: fp), fish on A
    (tp, IoU 1), fish half-overlapping B (IoU exactly 0.5: tp), fish on A again (fp, A taken), coral
    nowhere (fp), coral on C below conf (dropped, so C is a miss). Image 2: fish D; the higher-scored
    detection (IoU 0.6) is matched first, the exact one after it is a duplicate (fp)."""
    labels = [
        [box_label(0, 10, 10, 30, 30), box_label(0, 60, 60, 80, 80), box_label(1, 10, 60, 30, 80)],
        [box_label(0, 40, 40, 60, 60)],
    ]
    found = [
        dets(
            [
                (0, 0.95, 10, 60, 30, 80),
                (0, 0.9, 10, 10, 30, 30),
                (0, 0.8, 60, 60, 80, 100),
                (0, 0.7, 10, 10, 30, 30),
                (1, 0.6, 70, 10, 90, 30),
                (1, 0.3, 10, 60, 30, 80),
            ]
        ),
        dets([(0, 0.5, 40, 40, 60, 60), (0, 0.9, 40, 40, 60, 52)]),
    ]
    m = ev.threshold_metrics("detect", found, labels, 0.5, CLASSES)
    fish, coral = m["per_class"]["fish"], m["per_class"]["coral"]
    assert (fish["tp"], fish["fp"], fish["fn"]) == (3, 3, 0)
    assert (coral["tp"], coral["fp"], coral["fn"]) == (0, 1, 1)
    assert fish["precision"] == pytest.approx(0.5) and fish["recall"] == 1.0
    assert fish["f1"] == pytest.approx(2 / 3)
    assert coral == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 1, "fn": 1}
    a = m["all"]
    assert (a["tp"], a["fp"], a["fn"]) == (3, 4, 1)
    assert a["precision"] == pytest.approx(3 / 7) and a["recall"] == pytest.approx(3 / 4)
    assert a["f1"] == pytest.approx(2 * (3 / 7) * (3 / 4) / (3 / 7 + 3 / 4))
    assert m["mean_matched_iou"] == pytest.approx((1.0 + 0.5 + 0.6) / 3)
    assert (m["conf"], m["iou_threshold"], m["iou_kind"]) == (0.5, 0.5, "box")
    # a stricter IoU threshold turns the two partial matches into misses and false alarms
    strict = ev.threshold_metrics("detect", found, labels, 0.5, CLASSES, iou_thr=0.7)
    assert (strict["all"]["tp"], strict["all"]["fp"], strict["all"]["fn"]) == (2, 5, 2)
    empty = ev.threshold_metrics("detect", [dets([])], [[]], 0.5, CLASSES)
    assert empty["all"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 0}
    assert empty["mean_matched_iou"] == 0.0
    assert ev.threshold_metrics("segment", [], [], 0.5, CLASSES)["iou_kind"] == "mask"
    assert ev.threshold_metrics("obb", [], [], 0.5, CLASSES)["iou_kind"] == "rotated box"


def test_coco_eval_and_per_class_table(tmp_path):
    gt = {
        "images": [{"id": 0, "file_name": "a.png", "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 0, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0},
            {"id": 2, "image_id": 0, "category_id": 2, "bbox": [60, 60, 20, 20], "area": 400, "iscrowd": 0},
        ],
        "categories": [{"id": 1, "name": "fish"}, {"id": 2, "name": "coral"}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    results = [{"image_id": 0, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]
    m = ev.coco_eval(tmp_path / "gt.json", results, "bbox", CLASSES)
    assert m["mAP50"] == pytest.approx(0.5) and m["mAP50_95"] == pytest.approx(0.5)
    assert m["mAP75"] == pytest.approx(0.5) and m["AR100"] == pytest.approx(0.5)
    assert m["per_class"]["fish"] == {"AP50_95": pytest.approx(1.0), "AP50": pytest.approx(1.0)}
    assert m["per_class"]["coral"] == {"AP50_95": 0.0, "AP50": 0.0}
    none = ev.coco_eval(tmp_path / "gt.json", [], "bbox", CLASSES)
    assert none == {"mAP50_95": 0.0, "mAP50": 0.0, "mAP75": 0.0, "AR100": 0.0, "per_class": {}}
    at = ev.threshold_metrics(
        "detect", [dets([(0, 0.9, 10, 10, 30, 30)])], [[box_label(0, 10, 10, 30, 30)]], 0.5, CLASSES
    )
    metrics = {"coco_bbox": m, "ultralytics": {"per_class_AP50_95": {"fish": 0.7}}, "at_threshold": at}
    table = ev.per_class_table(metrics, CLASSES)
    assert list(table["class"]) == CLASSES
    fish, coral = table.to_dict(orient="records")
    assert fish["coco_bbox_AP50"] == pytest.approx(1.0) and fish["coco_bbox_AP50_95"] == pytest.approx(1.0)
    assert fish["ultralytics_AP50_95"] == 0.7 and fish["tp"] == 1 and fish["precision"] == 1.0
    assert coral["coco_bbox_AP50"] == 0.0 and np.isnan(coral["ultralytics_AP50_95"]) and coral["fn"] == 0
    assert "coco_segm_AP50" not in table


def test_detections_table_numbers_images_in_order():
    found = [dets([(1, 0.9, 10, 10, 30, 30)]), dets([]), dets([(0, 0.8, 0, 0, 5, 5), (1, 0.4, 1, 1, 2, 2)])]
    table = ev.detections_table(found, "detect", CLASSES)
    assert list(table["seq"]) == [0, 2, 2] and len(table) == 3
    assert ev.detections_table([], "detect", CLASSES).empty


def test_threshold_metrics_for_masks_and_rotated_boxes():
    """Segment: the ground-truth polygon is filled at image scale and matched by mask IoU; obb: the
    rotated boxes are matched by their corners. One hit, one false alarm, two misses of class 1."""
    square = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]  # pixels 0..10 of a 20 x 20 image
    labels = [
        [
            Label(0, "polygon", np.array(square)),
            Label(1, "polygon", np.array(square) + 0.45),
            Label(1, "polygon", np.array(square) * 0.2 + 0.7),
        ]
    ]
    hit = np.zeros((20, 20), bool)
    hit[:11, :11] = True
    off = np.zeros((20, 20), bool)
    off[15:, :5] = True
    found = [
        Detections(
            np.zeros((2, 4), np.float32),
            np.array([0.9, 0.8], np.float32),
            np.array([0, 1]),
            None,
            [hit, off],
            20,
            20,
        )
    ]
    m = ev.threshold_metrics("segment", found, labels, 0.5, CLASSES)
    assert m["mean_matched_iou"] == pytest.approx(1.0) and m["iou_kind"] == "mask"
    assert (m["per_class"]["coral"]["fp"], m["per_class"]["coral"]["fn"]) == (1, 2)
    a = m["all"]
    assert (a["tp"], a["fp"], a["fn"]) == (1, 1, 2)
    assert a["precision"] == 0.5 and a["recall"] == pytest.approx(1 / 3) and a["f1"] == pytest.approx(0.4)

    corners = np.array([[0.1, 0.1], [0.3, 0.1], [0.3, 0.3], [0.1, 0.3]])
    obb = np.array([[20, 20, 20, 20, 0], [25, 20, 20, 20, 0]], np.float32)
    found = [
        Detections(
            np.zeros((2, 4), np.float32),
            np.array([0.9, 0.8], np.float32),
            np.array([0, 0]),
            obb,
            None,
            100,
            100,
        )
    ]
    m = ev.threshold_metrics(
        "obb", found, [[Label(0, "obb", corners), Label(1, "obb", corners)]], 0.5, CLASSES
    )
    assert m["mean_matched_iou"] == pytest.approx(1.0, abs=1e-5) and m["iou_kind"] == "rotated box"
    assert (m["all"]["tp"], m["all"]["fp"], m["all"]["fn"]) == (1, 1, 1)
    assert m["all"]["precision"] == m["all"]["recall"] == m["all"]["f1"] == 0.5
    empty = Detections.empty("obb", 100, 100)
    assert ev.threshold_metrics("obb", [empty], [[Label(0, "obb", corners)]], 0.5, CLASSES)["all"]["fn"] == 1
