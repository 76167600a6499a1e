"""`snakemake cv`: k trainings of the use case's recipe, out-of-fold predictions, pooled figures."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ..conftest import run_snakemake, tiny_usecase, trained_copy

pytestmark = pytest.mark.workflow
K = 3


@pytest.fixture(scope="module")
def cv_run(flowcam_trained, tmp_path_factory):
    # the session's recipe and model (up to date in the copy): only the folds train
    uc = tiny_usecase(cv={"folds": K, "group": None, "seed": 0})
    work = trained_copy(flowcam_trained, tmp_path_factory.mktemp("cv") / "wd", uc)
    proc = run_snakemake(work, "cv")
    assert "rule train:" not in proc.stderr
    return work, proc


def test_every_labelled_image_is_predicted_once_by_a_model_that_never_saw_it(cv_run):
    work, proc = cv_run
    res = work / "results/flowcam"
    manifest = pd.read_parquet(res / "prepared/manifest.parquet")
    oof = pd.read_parquet(res / "cv/predictions.parquet")
    assert sorted(oof["id"]) == sorted(manifest["id"]) and oof["id"].is_unique
    assert sorted(oof["fold"].unique()) == list(range(K))
    for f in range(K):
        fold = pd.read_parquet(res / f"cv/fold{f}/manifest.parquet")
        held_out = set(oof.loc[oof["fold"] == f, "id"])
        assert set(fold.loc[fold["split"] == "test", "id"]) == held_out
        assert held_out.isdisjoint(fold.loc[fold["split"] != "test", "id"])  # no leakage
        assert (fold["split"] == "val").any() and (fold["split"] == "train").any()
    assert proc.stderr.count("rule cv_train:") == K  # k separate jobs


def test_pooled_figures_with_intervals_and_each_folds(cv_run):
    work, _ = cv_run
    m = json.loads((work / "results/flowcam/cv/metrics.json").read_text())
    pooled = m["pooled"]
    assert m["k"] == K and pooled["n"] == sum(f["n"] for f in m["folds"]) == 105
    low, high = pooled["intervals"]["accuracy"]
    assert low <= pooled["accuracy"] <= high and high - low > 0
    folds = pd.read_csv(work / "results/flowcam/cv/folds.tsv", sep="\t")
    assert list(folds["fold"]) == list(range(K))
    assert m["fold_mean"]["accuracy"] == pytest.approx(folds["accuracy"].mean())
    summary = pd.read_csv(work / "results/flowcam/cv/summary.tsv", sep="\t").set_index("metric")
    assert summary.loc["accuracy", "value"] == round(pooled["accuracy"], 4)


def test_the_shipped_model_is_scored_on_every_labelled_image_beside_the_estimate(cv_run):
    work, _ = cv_run
    res = work / "results/flowcam"
    own = json.loads((res / "cv/metrics.json").read_text())["shipped_model"]
    manifest = pd.read_parquet(res / "prepared/manifest.parquet")
    shipped = pd.read_parquet(res / "cv/shipped.parquet")
    assert sorted(shipped["id"]) == sorted(manifest["id"]) and own["n"] == len(manifest) == 105
    assert {s: v["n"] for s, v in own["by_split"].items()} == manifest["split"].value_counts().to_dict()
    probs = shipped.filter(like="p_").to_numpy()
    top1 = shipped.filter(like="p_").columns.str[2:][probs.argmax(1)]
    assert own["accuracy"] == pytest.approx((top1 == shipped["label"]).mean())
    test = shipped["split"] == "test"  # the test split's figure is the evaluate step's
    evaluated = json.loads((res / "eval/metrics.json").read_text())
    assert own["by_split"]["test"]["accuracy"] == pytest.approx(evaluated["accuracy"])
    assert own["by_split"]["test"]["n"] == test.sum()
    low, high = own["intervals"]["accuracy"]
    assert low <= own["accuracy"] <= high
    assert own["at_least_cv_estimate"] == (
        own["accuracy"] >= json.loads((res / "cv/metrics.json").read_text())["pooled"]["accuracy"]
    )


def test_folds_are_tracked_not_registered_and_cv_is_not_in_the_default_target(cv_run):
    work, _ = cv_run
    client = MlflowClient(f"sqlite:///{(work / 'results/mlflow/mlflow.db').resolve()}")
    runs = client.search_runs(client.get_experiment_by_name("aquaflow").experiment_id)
    trained = {r.data.tags.get("usecase") for r in runs if r.data.tags.get("step") == "train"}
    assert {f"flowcam-cv{f}" for f in range(K)} <= trained
    cv_runs = [r for r in runs if "cv_accuracy" in r.data.metrics]
    assert len(cv_runs) == 1 and "cv_accuracy_low" in cv_runs[0].data.metrics
    fold_runs = {r.info.run_id for r in runs if r.data.tags.get("usecase", "").startswith("flowcam-cv")}
    versions = client.search_model_versions("name='aquaflow_flowcam'")
    assert len(fold_runs) == K and not fold_runs & {v.run_id for v in versions}
    dry = run_snakemake(work, "-n", "--forceall", "--quiet", "rules")
    assert "cv_train" not in dry.stdout + dry.stderr
