"""Confidence intervals of evaluation figures: bootstrap over test images, for every task."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import precision_recall_fscore_support

from aquaflow.engine import evaluate, evaluate_detect
from aquaflow.tasks import intervals
from aquaflow.tasks.classify.metrics import classification_metrics, figures, top_k_accuracy
from aquaflow.tasks.detect.detections import Detections
from aquaflow.tasks.detect.formats import Label

SEED = {"resamples": 1000, "level": 0.95, "seed": 0}


def seven_of_eight():
    """8 test images, 2 classes, 7 classified right (the demo's test split size)."""
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    probs = np.tile([[0.9, 0.1]], (8, 1))
    probs[4:] = [0.2, 0.8]
    probs[7] = [0.6, 0.4]  # the one mistake
    return y, probs


def test_accuracy_interval_of_seven_of_eight_is_scipys_bootstrap_of_the_right_answers():
    y, probs = seven_of_eight()
    m = classification_metrics(y, probs, ["a", "b"], interval=SEED)
    direct = stats.bootstrap(
        ((probs.argmax(1) == y).astype(float),),
        np.mean,
        n_resamples=1000,
        method="percentile",
        random_state=np.random.default_rng(0),
    ).confidence_interval
    assert m["accuracy"] == 0.875
    assert m["intervals"]["accuracy"] == [direct.low, direct.high]
    assert m["intervals"]["accuracy"] == [0.625, 1.0]  # wide: 8 images say little
    assert {k: m["intervals"][k] for k in ("method", "resamples", "level", "seed")} == {
        "method": "percentile bootstrap over test images",
        **SEED,
    }


def test_every_figure_gets_an_interval_holding_its_value_and_the_same_seed_gives_the_same():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 200)
    probs = rng.dirichlet(np.ones(4), 200)
    probs[np.arange(120), y[:120]] += 1.5
    probs /= probs.sum(1, keepdims=True)
    m = classification_metrics(y, probs, list("abcd"), interval=SEED)
    headline = [k for k, v in m.items() if isinstance(v, float)]
    assert set(headline) <= set(m["intervals"]) and "top3_accuracy" in headline
    for k in headline:
        low, high = m["intervals"][k]
        assert low <= m[k] <= high and high - low > 0.01, k
    for row in m["per_class"]:
        for k in ("precision", "recall", "f1"):
            assert row[f"{k}_low"] <= row[k] <= row[f"{k}_high"], (row["class"], k)
    assert classification_metrics(y, probs, list("abcd"), interval=SEED)["intervals"] == m["intervals"]
    narrow = classification_metrics(y, probs, list("abcd"), interval={**SEED, "level": 0.5})["intervals"]
    assert (
        narrow["accuracy"][1] - narrow["accuracy"][0]
        < m["intervals"]["accuracy"][1] - m["intervals"]["accuracy"][0]
    )
    assert "intervals" not in classification_metrics(y, probs, list("abcd"), interval={"resamples": 0})
    assert "intervals" not in classification_metrics(y, probs, list("abcd"))


def test_fast_figures_equal_sklearn_on_ties_and_absent_classes():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 300)  # class 4 never occurs: macro-F1 over present classes differs
    probs = rng.dirichlet(np.ones(5), 300).round(1)  # many ties: top-k ranks ties by class index
    f = figures(y, probs)
    pred = probs.argmax(1)
    p, r, f1, _ = precision_recall_fscore_support(y, pred, labels=range(5), zero_division=0)
    np.testing.assert_allclose([f[f"precision/{i}"] for i in range(5)], p)
    np.testing.assert_allclose([f[f"recall/{i}"] for i in range(5)], r)
    np.testing.assert_allclose([f[f"f1/{i}"] for i in range(5)], f1)
    m = classification_metrics(y, probs, list("abcde"))
    for k in ("accuracy", "macro_f1", "macro_f1_all_classes", "weighted_f1", "ece"):
        assert f[k] == pytest.approx(m[k], abs=1e-12), k
    for k in (1, 3, 5):
        assert f[f"top{k}_accuracy"] == top_k_accuracy(y, probs, k)


def test_summary_table_and_mlflow_keys_carry_low_and_high():
    y, probs = seven_of_eight()
    m = classification_metrics(y, probs, ["a", "b"], interval=SEED)
    table = evaluate.summary_table(m).set_index("metric")
    assert table.loc["accuracy", "low"] == 0.625 and table.loc["accuracy", "high"] == 1.0
    assert table.loc["n", "value"] == 8 and table.loc["n"].isna()["low"]
    flat = intervals.flat(m["intervals"])
    assert flat["accuracy_low"] == 0.625 and flat["accuracy_high"] == 1.0
    assert not any(k.startswith(("method", "seed", "level", "resamples")) for k in flat)


# --- detection: per-image resampling of mAP (pycocotools) and of the figures at a threshold ---------
CLASSES = ["fish", "coral"]


def scene(shift: float, seed: int):
    """One 100 px image with a fish and a coral box; detections = the truth moved `shift` px."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(5, 40, 2)
    boxes = np.array([[x, y, x + 20, y + 20], [x + 30, y + 30, x + 50, y + 50]])
    labels = [
        Label(c, "box", np.r_[(b[:2] + b[2:]) / 200, (b[2:] - b[:2]) / 100]) for c, b in enumerate(boxes)
    ]
    found = Detections(
        (boxes + np.array([shift, 0, shift, 0])).astype(np.float32),
        np.array([0.9, 0.8], np.float32),
        np.array([0, 1]),
        None,
        None,
        100,
        100,
    )
    return found, labels


def coco_truth(labels_per_image, path):
    anns = []
    for i, labels in enumerate(labels_per_image):
        for lab in labels:
            x0, y0, x1, y1 = lab.xyxy() * 100
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": lab.cls + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    gt = {
        "images": [
            {"id": i, "file_name": f"{i}.png", "width": 100, "height": 100}
            for i in range(len(labels_per_image))
        ],
        "annotations": anns,
        "categories": [{"id": k + 1, "name": c} for k, c in enumerate(CLASSES)],
    }
    path.write_text(json.dumps(gt))
    return path


def detection_case(tmp_path, shifts):
    found, labels = zip(*(scene(s, i) for i, s in enumerate(shifts)), strict=True)
    gt = coco_truth(labels, tmp_path / "gt.json")
    table = evaluate_detect.detections_table(list(found), "detect", CLASSES)
    from aquaflow.tasks.detect import outputs

    return list(found), list(labels), gt, outputs.coco_results(table, "detect")


def test_resampled_coco_map_of_all_images_is_cocoevals_and_repeats_count_twice(tmp_path):
    *_, gt, results = detection_case(tmp_path, [0, 0, 30, 0, 30, 0])
    whole = evaluate_detect.coco_eval(gt, results, "bbox", CLASSES)
    resampled = evaluate_detect.coco_resampled(gt, results, "bbox")
    got = resampled(np.arange(6))
    assert got["mAP50"] == pytest.approx(whole["mAP50"]) and got["mAP50_95"] == pytest.approx(
        whole["mAP50_95"]
    )
    assert 0 < whole["mAP50"] < 1
    assert resampled(np.array([0, 0, 1]))["mAP50"] == pytest.approx(1.0)  # only exact images drawn
    assert resampled(np.array([2, 4, 4]))["mAP50"] == pytest.approx(0.0)  # only shifted ones
    # an image drawn twice weighs twice: 2 exact + 1 shifted vs 1 exact + 2 shifted
    assert resampled(np.array([0, 0, 2]))["mAP50"] > resampled(np.array([0, 2, 2]))["mAP50"]


def test_detection_intervals_bracket_the_figures_and_collapse_on_a_perfect_model(tmp_path):
    found, labels, gt, results = detection_case(tmp_path, [0, 0, 30, 0, 30, 0, 0, 30])
    iv = evaluate_detect.detection_intervals("detect", found, labels, 0.5, CLASSES, gt, results, SEED)
    whole = evaluate_detect.coco_eval(gt, results, "bbox", CLASSES)
    at = evaluate_detect.threshold_metrics("detect", found, labels, 0.5, CLASSES)
    assert iv["method"] == "percentile bootstrap over test images, each with all its objects"
    for k, value in [("mAP50", whole["mAP50"]), ("recall", at["all"]["recall"]), ("f1", at["all"]["f1"])]:
        assert iv[k][0] < value < iv[k][1], (k, value, iv[k])
    assert iv["precision/fish"][0] <= at["per_class"]["fish"]["precision"] <= iv["precision/fish"][1]
    perfect = detection_case(tmp_path, [0] * 5)
    iv = evaluate_detect.detection_intervals("detect", *perfect[:2], 0.5, CLASSES, *perfect[2:], SEED)
    assert iv["mAP50"] == [pytest.approx(1.0)] * 2 and iv["recall"] == [1.0, 1.0]
    off = evaluate_detect.detection_intervals(
        "detect", *perfect[:2], 0.5, CLASSES, *perfect[2:], {"resamples": 0}
    )
    assert "mAP50" not in off and off["resamples"] == 0
