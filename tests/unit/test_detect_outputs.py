"""Detection post-processing and outputs without a model: tile merging, coordinates, RLE, COCO."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from aquaflow.tasks.detect import outputs
from aquaflow.tasks.detect.detections import Detections, merge, obb_corners, shift


def dets(boxes, scores, cls, masks=None, h=100, w=200):
    return Detections(
        np.asarray(boxes, np.float32),
        np.asarray(scores, np.float32),
        np.asarray(cls, np.int64),
        None,
        masks,
        h,
        w,
    )


def test_nmm_with_ios_merges_a_cut_off_part_into_the_whole_object():
    # tile A saw the whole fish, tile B only its right half; a different fish elsewhere stays
    d = dets([[40, 10, 80, 30], [60, 10, 80, 30], [150, 50, 170, 60]], [0.9, 0.6, 0.8], [0, 0, 0])
    out = merge(d, "nmm", "ios", 0.5, 100)
    assert len(out) == 2
    np.testing.assert_allclose(out.xyxy[0], [40, 10, 80, 30])
    # with IoU matching the half box (IoU 0.5 -> kept at threshold 0.6) is a duplicate
    assert len(merge(d, "nms", "iou", 0.6, 100)) == 3
    assert len(merge(d, "none", "ios", 0.5, 100)) == 3


def test_merge_is_per_class_and_nmm_unites_boxes_and_masks():
    m1 = np.zeros((100, 200), bool)
    m1[10:30, 40:70] = True
    m2 = np.zeros((100, 200), bool)
    m2[10:30, 60:80] = True
    d = dets([[40, 10, 70, 30], [60, 10, 80, 30]], [0.7, 0.9], [1, 1], masks=[m1, m2])
    out = merge(d, "nmm", "ios", 0.3, 100)
    assert len(out) == 1 and out.score[0] == pytest.approx(0.9)
    np.testing.assert_allclose(out.xyxy[0], [40, 10, 80, 30])
    assert out.masks[0].sum() == (m1 | m2).sum()
    other = dets([[40, 10, 70, 30], [60, 10, 80, 30]], [0.7, 0.9], [0, 1])
    assert len(merge(other, "nmm", "ios", 0.3, 100)) == 2


def test_shift_moves_tile_detections_into_image_coordinates():
    m = np.zeros((32, 32), bool)
    m[4:8, 30:32] = True
    d = Detections(
        np.array([[30, 4, 32, 8]], np.float32),
        np.ones(1, np.float32),
        np.zeros(1, np.int64),
        None,
        [m],
        32,
        32,
    )
    s = shift(d, 100, 50, 90, 140)
    np.testing.assert_allclose(s.xyxy[0], [130, 54, 132, 58])
    assert s.masks[0].shape == (90, 140) and s.masks[0][54:58, 130:132].all() and s.masks[0].sum() == 8


def test_obb_corners_match_opencv():
    obb = np.array([[50, 40, 30, 10, np.deg2rad(30)]], np.float32)
    ours = obb_corners(obb)[0]
    cv = cv2.boxPoints(((50, 40), (30, 10), 30))
    # same rectangle: every OpenCV corner is one of ours
    assert max(np.linalg.norm(ours - p, axis=1).min() for p in cv) < 1e-3


@pytest.mark.parametrize("task", ["detect", "segment", "obb"])
def test_rows_coco_results_and_schema(task):
    """Table rows follow the schema; COCO results load with pycocotools loadRes and keep the RLE."""
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    h, w = 60, 80
    mask = np.zeros((h, w), bool)
    mask[10:20, 5:25] = True
    d = Detections(
        np.array([[5, 10, 25, 20]], np.float32),
        np.array([0.8], np.float32),
        np.array([1], np.int64),
        np.array([[15, 15, 20, 10, 0.0]], np.float32) if task == "obb" else None,
        [mask] if task == "segment" else None,
        h,
        w,
    )
    px = {"value": 0.5, "unit": "mm"}
    cols = outputs.detection_rows(d, task, ["a", "b"], px)
    n = len(d)
    cols = {
        "seq": [3] * n,
        "id": ["x"] * n,
        "source": ["s.png"] * n,
        **cols,
        "model_id": ["m"],
        "run_id": ["r"],
    }
    schema = outputs.detection_schema(task, pa.schema([]), outputs.area_column(px))
    table = pa.table({f.name: cols[f.name] for f in schema}, schema=schema).to_pandas()
    want_area = {"detect": 200.0, "segment": 200.0, "obb": 200.0}[task]
    assert table["area_px"].iloc[0] == pytest.approx(want_area)
    assert table["area_mm2"].iloc[0] == pytest.approx(want_area * 0.25)
    res = outputs.coco_results(table, task)
    assert res[0]["image_id"] == 3 and res[0]["category_id"] == 2 and res[0]["bbox"] == [5, 10, 20, 10]
    counts = pd.DataFrame({"seq": [3], "source": ["s.png"], "image_width": [w], "image_height": [h]})
    gt = COCO()
    gt.dataset = outputs.coco_images(counts, ["a", "b"])
    gt.createIndex()
    loaded = gt.loadRes(res)
    ann = loaded.loadAnns(loaded.getAnnIds())[0]
    if task == "segment":
        assert mask_utils.decode(ann["segmentation"]).sum() == 200
    if task == "obb":
        assert len(ann["obb"]["corners"]) == 8 and ann["obb"]["xywhr"][2] == 20


def test_rle_round_trip():
    rng = np.random.default_rng(0)
    m = rng.random((37, 53)) > 0.6
    assert (outputs.rle_decode(outputs.rle_encode(m), 37, 53) == m).all()
