"""Classification figures pinned to exact values: the fast numpy `figures` (what every bootstrap
resample recomputes), the true-class rank, and the interval block of `classification_metrics`."""

import warnings

import numpy as np
import pytest

from aquaflow.tasks import intervals
from aquaflow.tasks.classify.metrics import classification_metrics, figures, true_class_rank

# four classes; class 3 never occurs nor is predicted. Truth [1, 0, 2, 2], argmax [2, 2, 2, 0]
PROBS = np.array([[0.3, 0.3, 0.4, 0], [0.3, 0.3, 0.4, 0], [0.3, 0.3, 0.4, 0], [0.5, 0.25, 0.25, 0]])
Y = np.array([1, 0, 2, 2])


def test_true_class_rank_counts_higher_scores_and_ties_at_a_lower_index():
    # row 0: class 2 higher, class 0 tied at a lower index -> 2; row 3: class 0 higher, 1 tied -> 2
    assert true_class_rank(Y, PROBS).tolist() == [2, 1, 0, 2]
    assert true_class_rank(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]])).tolist() == [0, 1]


def test_figures_exact_values_with_an_absent_class_and_a_never_predicted_class():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the 0/0 of absent classes is silenced, not warned about
        f = figures(Y, PROBS, ks=(1, 2, 3, 5))
    # cm rows (truth) x columns (argmax): [[0,0,1,0],[0,0,1,0],[1,0,1,0],[0,0,0,0]]
    precision, recall, f1 = [0, 0, 1 / 3, 0], [0, 0, 0.5, 0], [0, 0, 0.4, 0]
    expected = {
        "accuracy": 0.25,
        "macro_f1": 0.4 / 3,  # over classes 0-2 (present in the truth)
        "macro_f1_all_classes": 0.1,
        "weighted_f1": 0.4 * 2 / 4,
        "ece": (abs(1 - 1.2) + abs(0 - 0.5)) / 4,  # bins of confidence 0.4 (3 items) and 0.5 (1)
        "top1_accuracy": 0.25,
        "top2_accuracy": 0.5,
        "top3_accuracy": 1.0,
        **{f"precision/{i}": v for i, v in enumerate(precision)},
        **{f"recall/{i}": v for i, v in enumerate(recall)},
        **{f"f1/{i}": v for i, v in enumerate(f1)},
    }
    assert set(f) == set(expected)  # no top5: only 4 classes
    assert f == pytest.approx(expected)
    # the same figures as the sklearn path, per class too
    m = classification_metrics(Y, PROBS, list("abcd"), ks=(1, 2, 3, 5))
    for key in ("accuracy", "macro_f1", "macro_f1_all_classes", "weighted_f1", "ece", "top2_accuracy"):
        assert f[key] == pytest.approx(m[key])
    assert [r["f1"] for r in m["per_class"]] == pytest.approx(f1)


def test_figures_of_a_perfect_model_and_default_ks():
    probs = np.eye(3)[[0, 1, 2, 2]]
    f = figures(np.array([0, 1, 2, 2]), probs)
    assert {k for k in f if k.startswith("top")} == {"top1_accuracy", "top3_accuracy"}
    assert all(f[k] == 1.0 for k in ("accuracy", "macro_f1", "macro_f1_all_classes", "weighted_f1"))
    assert f["ece"] == 0.0 and f["top1_accuracy"] == 1.0


def test_interval_block_is_the_bootstrap_of_figures_with_its_settings():
    y = np.array([0, 1, 1, 2, 2, 2, 0, 1])
    probs = np.eye(3)[[0, 1, 2, 2, 2, 1, 0, 1]] * 0.7 + 0.1
    settings = {"resamples": 40, "level": 0.8, "seed": 3}
    m = classification_metrics(y, probs, ["a", "b", "c"], ks=(1, 2), interval=settings)
    found = intervals.bootstrap(lambda idx: figures(y[idx], probs[idx], (1, 2)), len(y), **settings)
    block = m["intervals"]
    assert block["method"] == "percentile bootstrap over test images"
    assert (block["resamples"], block["level"], block["seed"]) == (40, 0.8, 3)
    headline = {k: v for k, v in found.items() if "/" not in k}
    assert {k: v for k, v in block.items() if k not in {"method", "resamples", "level", "seed"}} == headline
    assert set(headline) == {"accuracy", "ece", "top1_accuracy", "top2_accuracy"} | {
        "macro_f1", "macro_f1_all_classes", "weighted_f1",
    }  # fmt: skip
    for i, row in enumerate(m["per_class"]):
        for name in ("precision", "recall", "f1"):
            assert [row[f"{name}_low"], row[f"{name}_high"]] == found[f"{name}/{i}"]
            assert row[f"{name}_low"] <= row[name] <= row[f"{name}_high"]


def test_intervals_need_settings_resamples_and_two_items():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    two = classification_metrics(np.array([0, 1]), probs, ["a", "b"], interval={"resamples": 5})
    assert two["intervals"]["resamples"] == 5 and two["intervals"]["level"] == 0.95
    assert two["per_class"][1]["recall_high"] == 1.0
    assert two["intervals"]["seed"] == 0
    defaults = classification_metrics(np.array([0, 1]), probs, ["a", "b"], interval={})
    assert defaults["intervals"]["resamples"] == 1000 and defaults["intervals"]["level"] == 0.95
    one = classification_metrics(np.array([0]), probs[:1], ["a", "b"], interval={"resamples": 5})
    assert "intervals" not in one and "precision_low" not in one["per_class"][0]
    with warnings.catch_warnings():  # scipy's standard error of a single resample divides by zero
        warnings.simplefilter("ignore", RuntimeWarning)
        single = classification_metrics(np.array([0, 1]), probs, ["a", "b"], interval={"resamples": 1})
    assert single["intervals"]["resamples"] == 1 and "accuracy" in single["intervals"]
    none = classification_metrics(np.array([0, 1]), probs, ["a", "b"], interval={"resamples": 0})
    assert "intervals" not in none
    assert "intervals" not in classification_metrics(np.array([0, 1]), probs, ["a", "b"])
