"""The FlowCam demo workflow end to end on the real planktonclas images, tiny budget, CPU."""

import json
import zipfile

import mlflow
import pandas as pd
import pytest
from PIL import Image

from aquaflow.data import imaging
from aquaflow.io import sha256_file
from aquaflow.monitoring import tracking
from aquaflow.standards import ecotaxa
from aquaflow.synthetic.inputs import write_bad_inputs

from ..conftest import run_snakemake, tiny_usecase, trained_copy, write_workdir

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def demo(tmp_path_factory, flowcam_trained):
    """The workflow from fetch to the exports: fetch, prepare, train and evaluate ran in the
    session's `flowcam_trained` workdir (this config's training), the rest runs in a copy of it:
    the campaign of dataset images plus a folder of awkward inputs."""
    work = trained_copy(flowcam_trained, tmp_path_factory.mktemp("flowcam") / "work")
    expected = write_bad_inputs(work / "incoming")
    # a folder listing descends into directories: a directory named *.jpg is not an item
    expected = {k: v for k, v in expected.items() if not (work / "incoming" / k).is_dir()}
    uc = tiny_usecase()
    uc["inference"] = {"top_k": 3}
    uc["campaigns"] = {
        "demo": {
            "inputs": [{"kind": "dataset"}, {"kind": "folder", "path": "incoming"}],
            "metadata": {"sample_id": "planktonclas_demo", "station": "W07"},
        }
    }
    write_workdir(work, {"flowcam": uc})
    proc = run_snakemake(work, "--report", "report.html", "--report-after-run")  # one run, not two
    assert "rule train:" not in proc.stdout + proc.stderr  # the session's training was up to date
    return work, work / "results" / "flowcam", expected, proc


CAMPAIGN = "campaigns/demo"


def test_manifest(demo):
    _, res, _, _ = demo
    m = pd.read_parquet(res / "prepared/manifest.parquet")
    assert list(m.columns) == ["id", "path", "sha256", "label", "width", "height", "split"]
    assert len(m) == 105 and m["id"].is_unique
    assert m["split"].value_counts().to_dict() == {"train": 82, "val": 15, "test": 8}
    assert pd.read_parquet(res / "prepared/rejected.parquet").empty


def test_model_and_card(demo):
    _, res, _, _ = demo
    card = json.loads((res / "model/model_card.json").read_text())
    assert card["id"] == sha256_file(res / "model/model.safetensors")
    assert card["format"] == "safetensors" and card["input_size"] == 64
    assert len(card["classes"]) == 6 and card["training"]["epochs_run"] == 3
    assert card["data"]["source"] == {"kind": "package", "package": "planktonclas", "subdir": "resources"}
    assert card["weights"] == "model.safetensors" and card["backend"] == "torch"
    assert (res / "model/training_curve.png").stat().st_size > 0


def test_evaluation(demo):
    _, res, _, _ = demo
    m = json.loads((res / "eval/metrics.json").read_text())
    assert m["n"] == 8 and m["split"] == "test"
    for key in ("accuracy", "macro_f1", "weighted_f1", "ece", "top1_accuracy", "top3_accuracy"):
        assert 0.0 <= m[key] <= 1.0, key
    assert m["top1_accuracy"] <= m["top3_accuracy"] <= m["top5_accuracy"]
    assert sum(map(sum, m["confusion_matrix"])) == 8
    per_class = pd.read_csv(res / "eval/per_class.tsv", sep="\t")
    intervals = [f"{k}_{side}" for k in ("precision", "recall", "f1") for side in ("low", "high")]
    assert list(per_class.columns) == ["class", "precision", "recall", "f1", "support", *intervals]
    assert per_class["support"].sum() == 8 and len(per_class) == 6
    for png in ("eval/confusion_matrix.png", "model/training_curve.png"):
        with Image.open(res / png) as im:
            assert im.format == "PNG" and im.width > 300


def test_predictions_reconcile_with_inputs(demo):
    _, res, expected, _ = demo
    inputs = pd.read_parquet(res / CAMPAIGN / "inputs.parquet")
    pred = pd.read_parquet(res / CAMPAIGN / "predictions.parquet")
    rej = pd.read_parquet(res / CAMPAIGN / "rejected.parquet")
    assert len(inputs) == 105 + len(expected)
    assert len(pred) + len(rej) == len(inputs)
    assert set(pred["seq"]).isdisjoint(rej["seq"]) and set(pred["seq"]) | set(rej["seq"]) == set(
        inputs["seq"]
    )
    card = json.loads((res / "model/model_card.json").read_text())
    assert (pred["model_id"] == card["id"]).all() and pred["run_id"].nunique() == 1
    assert pred["top1_label"].isin(card["classes"]).all()
    assert (pred["top1_prob"] >= pred["top2_prob"]).all() and (pred["top2_prob"] >= pred["top3_prob"]).all()
    assert pred[["top1_prob", "top2_prob", "top3_prob"]].sum(axis=1).le(1.0001).all()
    reasons = dict(zip(rej["source"].str.rsplit("/", n=1).str[-1], rej["reason"], strict=True))
    assert reasons == {name: r for name, r in expected.items() if r is not None}
    assert rej["detail"].notna().all()
    summary = json.loads((res / CAMPAIGN / "summary.json").read_text())
    assert summary["seen"] == len(inputs) and summary["rejected"] == len(rej)
    assert sum(summary["per_class"].values()) == len(pred)
    # the gathered dataset folder reads back as the same rows
    ds = pd.read_parquet(res / CAMPAIGN / "dataset").sort_values("seq").reset_index(drop=True)
    pd.testing.assert_frame_equal(ds, pred)


def test_ecotaxa_export(demo):
    _, res, _, _ = demo
    tsv = res / CAMPAIGN / "export/ecotaxa_flowcam_demo.tsv"
    lines = tsv.read_text().splitlines()
    header, types = lines[0].split("\t"), lines[1].split("\t")
    assert header[:4] == [
        "img_file_name",
        "object_id",
        "object_annotation_category",
        "object_annotation_status",
    ]
    assert all(t in ("[t]", "[f]") for t in types) and len(types) == len(header)
    typed = dict(zip(header, types, strict=True))
    assert typed["object_score_top1"] == "[f]" and typed["object_pred_top2"] == "[t]"
    df, _ = ecotaxa.read_tsv(tsv)
    pred = pd.read_parquet(res / CAMPAIGN / "predictions.parquet")
    assert len(df) == len(pred)
    assert (df["object_annotation_status"] == "predicted").all()
    assert set(df["object_annotation_category"]) <= set(pred["top1_label"])
    assert all(c.startswith(ecotaxa.PREFIXES) for c in header)
    assert set(df["sample_id"]) == {"planktonclas_demo"} and set(df["acq_id"]) == {"planktonclas_demo"}
    assert set(df["sample_station"]) == {"W07"}
    assert set(df["process_model_id"]) == {pred["model_id"].iloc[0]}
    with zipfile.ZipFile(res / CAMPAIGN / "export/ecotaxa_flowcam_demo.zip") as zf:
        names = set(zf.namelist())
        assert "ecotaxa_flowcam_demo.tsv" in names
        assert set(df["img_file_name"]) <= names
        first = df["img_file_name"].iloc[-1]
        assert imaging.decode(zf.read(first)).image.ndim == 3


def test_mlflow_run(demo, flowcam_trained):
    _, res, _, _ = demo
    card = json.loads((res / "model/model_card.json").read_text())
    mlflow.set_tracking_uri(tracking.store_uri(card["mlflow"]["tracking_uri"], flowcam_trained))
    run = mlflow.get_run(card["mlflow"]["run_id"])
    assert run.data.params["model.arch"] == "lcnet_050"
    assert run.data.params["training.balancing"] == "weights"
    assert "val_macro_f1" in run.data.metrics and "test_accuracy" in run.data.metrics
    # the default store is in the working directory where the model was trained, named relative to it
    assert card["mlflow"]["tracking_uri"] == "sqlite:///results/mlflow/mlflow.db"


def test_second_run_does_nothing(demo):
    work, _, _, _ = demo
    proc = run_snakemake(work)
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_report(demo):
    work, _, _, _ = demo
    html = (work / "report.html").read_text()
    assert "Confusion matrix on the held-out split" in html
    assert "per_class.tsv" in html and "training_curve.png" in html


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (lambda uc: uc["training"].update(epoch=3), "unknown key 'training.epoch'"),
        (lambda uc: uc["training"].update(epochs="three"), "training.epochs"),
        (lambda uc: uc["inference"].update(backend="gpu-magic"), "inference.backend"),
    ],
)
def test_invalid_config_fails_before_any_job(tmp_path, edit, needle):
    uc = tiny_usecase()
    edit(uc)
    write_workdir(tmp_path, {"flowcam": uc})
    proc = run_snakemake(tmp_path, check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()
