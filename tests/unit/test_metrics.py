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
