import warnings

import numpy as np
import pytest

from aquaflow.data import balance
from aquaflow.tasks.classify.metrics import classification_metrics, expected_calibration_error, top_k_accuracy


def test_top_k():
    probs = np.array([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    y = np.array([1, 2, 2])
    assert top_k_accuracy(y, probs, 1) == pytest.approx(1 / 3)
    assert top_k_accuracy(y, probs, 2) == pytest.approx(2 / 3)
    assert top_k_accuracy(y, probs, 3) == 1.0


def test_ece_known_values():
    # all predictions at confidence 0.8: half right -> |0.5 - 0.8| = 0.3
    probs = np.array([[0.8, 0.2]] * 4)
    assert expected_calibration_error(np.array([0, 0, 1, 1]), probs) == pytest.approx(0.3)
    # perfectly confident and right -> 0
    assert expected_calibration_error(np.array([0, 1]), np.eye(2)) == pytest.approx(0.0)


def test_classification_metrics_table():
    classes = ["a", "b", "c"]
    y = np.array([0, 0, 1, 1, 2])
    probs = np.eye(3)[[0, 1, 1, 1, 2]] * 0.9 + 0.1 / 3
    m = classification_metrics(y, probs, classes)
    assert m["n"] == 5 and m["accuracy"] == pytest.approx(0.8)
    pc = {r["class"]: r for r in m["per_class"]}
    assert pc["a"]["recall"] == pytest.approx(0.5) and pc["a"]["precision"] == 1.0
    assert pc["b"]["precision"] == pytest.approx(2 / 3) and pc["b"]["support"] == 2
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 1]]
    f1 = [2 / 3, 0.8, 1.0]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["weighted_f1"] == pytest.approx(np.average(f1, weights=[2, 2, 1]))
    assert "top3_accuracy" in m and "top5_accuracy" not in m


def test_class_weights_and_resampling():
    labels = np.array([0] * 8 + [1] * 2)
    w = balance.class_weights(labels, 3)
    assert w[0] == pytest.approx(10 / (2 * 8)) and w[1] == pytest.approx(10 / (2 * 2)) and w[2] == 0
    assert (w[labels]).mean() == pytest.approx(1.0)
    lw = balance.class_weights(labels, 2, "log")
    assert lw[1] > lw[0] and (lw[labels]).mean() == pytest.approx(1.0)
    idx = balance.resample_indices(labels, 2, 4000, seed=0)
    share = (labels[idx] == 1).mean()
    assert 0.45 < share < 0.55
    assert np.array_equal(idx, balance.resample_indices(labels, 2, 4000, seed=0))


def test_top_k_orders_by_probability_and_breaks_ties_by_index():
    probs = np.array([[0.1, 0.6, 0.3], [0.7, 0.2, 0.1]])
    assert top_k_accuracy(np.array([1, 0]), probs, 1) == 1.0
    assert top_k_accuracy(np.array([2, 1]), probs, 1) == 0.0
    assert top_k_accuracy(np.array([2, 1]), probs, 2) == 1.0
    assert top_k_accuracy(np.array([2, 2]), probs, 9) == 1.0  # k above the class count = all classes
    assert np.isnan(top_k_accuracy(np.array([], dtype=int), np.zeros((0, 3)), 1))
    assert top_k_accuracy(np.array([0]), np.array([[0.9, 0.1]]), 1) == 1.0  # a single item
    # many tied scores among 40 classes: the first of the tied maxima wins, as argmax says
    tied = np.random.default_rng(0).integers(0, 3, size=(50, 40)).astype(float)
    assert top_k_accuracy(tied.argmax(axis=1), tied, 1) == 1.0


def test_ece_over_several_bins_with_edges_closed_on_the_right():
    # confidences 0.2 (right), 0.3 (wrong), 0.75 (wrong, exactly on an edge), 0.9 (right); 4 bins
    rows = [[0.2] * 5, [0.3] + [0.175] * 4, [0.75, 0.25, 0, 0, 0], [0.9, 0.1, 0, 0, 0]]
    probs, y = np.array(rows), np.array([0, 1, 1, 0])
    assert expected_calibration_error(y, probs, bins=4) == pytest.approx(0.25 * (0.8 + 0.3 + 0.75 + 0.1))
    # the default 15 bins also keep the four apart
    assert expected_calibration_error(y, probs) == pytest.approx(0.25 * (0.8 + 0.3 + 0.75 + 0.1))
    assert expected_calibration_error(np.array([1]), np.array([[0.8, 0.2]])) == pytest.approx(0.8)
    # 15 bins by default: 0.93 and 0.935 fall on either side of 14/15 (16 bins would join them)
    two = np.array([[0.93, 0.07], [0.935, 0.065]])
    assert expected_calibration_error(np.array([0, 1]), two) == pytest.approx(0.5 * 0.07 + 0.5 * 0.935)
    assert np.isnan(expected_calibration_error(np.array([], dtype=int), np.zeros((0, 2))))


def test_macro_f1_counts_only_classes_present_in_the_truth():
    """Class c is predicted once but never true; class d is neither: macro-F1 averages a and b only,
    macro_f1_all_classes all four (c and d score 0, without warnings)."""
    classes = ["a", "b", "c", "d"]
    y = [0, 0, 1, 1]
    probs = np.eye(4)[[0, 2, 1, 1]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = classification_metrics(y, probs, classes)
    f1 = {"a": 2 / 3, "b": 1.0, "c": 0.0, "d": 0.0}
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert m["macro_f1_all_classes"] == pytest.approx(sum(f1.values()) / 4)
    assert m["weighted_f1"] == pytest.approx((2 / 3 * 2 + 1.0 * 2) / 4)
    assert m["accuracy"] == pytest.approx(0.75) and m["n"] == 4
    assert m["ece"] == pytest.approx(0.25)  # all at confidence 1, 3 of 4 right
    assert m["top1_accuracy"] == pytest.approx(0.75) and m["top3_accuracy"] == 1.0
    assert m["confusion_matrix"] == [[1, 0, 1, 0], [0, 2, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    pc = {r["class"]: r for r in m["per_class"]}
    assert list(pc) == classes
    assert {c: r["f1"] for c, r in pc.items()} == pytest.approx(f1)
    assert pc["c"]["precision"] == 0.0 and pc["d"]["precision"] == 0.0 and pc["d"]["recall"] == 0.0
    assert [r["support"] for r in m["per_class"]] == [2, 2, 0, 0]
    assert all(type(r["support"]) is int for r in m["per_class"])
    assert set(m) == {
        "n", "accuracy", "macro_f1", "macro_f1_all_classes", "weighted_f1", "ece", "per_class",
        "confusion_matrix", "top1_accuracy", "top3_accuracy",
    }  # fmt: skip
