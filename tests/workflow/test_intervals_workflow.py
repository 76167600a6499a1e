"""The workflow's evaluation writes every figure's interval: metrics.json, the tables, MLflow."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from aquaflow.monitoring import tracking

pytestmark = pytest.mark.workflow


def test_evaluation_carries_intervals_into_metrics_tables_and_mlflow(flowcam_trained):
    res = flowcam_trained / "results/flowcam"
    m = json.loads((res / "eval/metrics.json").read_text())
    iv = m["intervals"]
    assert (iv["resamples"], iv["level"], iv["seed"]) == (1000, 0.95, 0)  # the schema's defaults
    for k in ("accuracy", "macro_f1", "weighted_f1", "ece", "top3_accuracy"):
        assert iv[k][0] <= m[k] <= iv[k][1], k
    assert iv["accuracy"][1] - iv["accuracy"][0] > 0.1  # a handful of test images: a wide interval
    summary = pd.read_csv(res / "eval/summary.tsv", sep="\t").set_index("metric")
    assert summary.loc["accuracy", "low"] == round(iv["accuracy"][0], 4)
    assert summary.loc["accuracy", "high"] == round(iv["accuracy"][1], 4)
    per_class = pd.read_csv(res / "eval/per_class.tsv", sep="\t")
    assert (per_class["recall_low"] <= per_class["recall"]).all()
    assert (per_class["recall"] <= per_class["recall_high"]).all()
    card = json.loads((res / "model/model_card.json").read_text())
    uri = tracking.store_uri(card["mlflow"]["tracking_uri"], flowcam_trained)
    run = MlflowClient(uri).get_run(card["mlflow"]["run_id"])
    assert run.data.metrics["test_accuracy_low"] == pytest.approx(iv["accuracy"][0])
    assert run.data.metrics["test_macro_f1_high"] == pytest.approx(iv["macro_f1"][1])
