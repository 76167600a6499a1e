"""Detection models through MLflow and as given models, in the real workflow, on CPU.

1. A fish detection use case (YOLO11n from its yaml, 2 epochs on 16 generated 80 px scenes) trains,
   evaluates and predicts a campaign; its MLflow training run (params, metrics per epoch, the model
   folder as artifact `model`, the held-out figures of `evaluate`) and its registry version are read
   back through the MLflow client.
2. In a second run, two use cases without data predict the same campaign: `reef` takes the model
   from the registry (`model.source: mlflow`, `models:/aquaflow_fish/1`), `given` from a folder the
   test writes (`model.source: path`: model.pt + a hand-written model_card.json). Neither trains,
   and both find exactly the detections of the use case that trained the model.
"""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from aquaflow.io import sha256_file, write_json
from aquaflow.monitoring import tracking
from aquaflow.synthetic import scenes
from tests.conftest import REPO, run_snakemake, write_workdir

pytestmark = pytest.mark.workflow

SIZE = 64  # Ultralytics image size (a multiple of the stride 32)
CLASSES = list(scenes.KINDS["fish"][1])
EPOCHS = 2
PREDICT = {
    "device": "cpu",
    "batch": 8,
    "conf": 0.001,
    "max_det": 20,
}  # low conf: a 2-epoch model still finds boxes


def detect_usecase(campaign_dir, **top) -> dict:
    uc = yaml.safe_load((REPO / "config/usecases/fish_detection.yaml").read_text())
    det = uc["detection"]
    det["imgsz"] = SIZE
    det["predict"].update(PREDICT)
    det["overlays"] = 1
    uc["campaigns"] = {"survey": {"inputs": [{"kind": "folder", "path": str(campaign_dir)}]}}
    uc.pop("source")
    return uc | top


def targets(uc: str) -> list[str]:
    """What the tests read of a use case: its model card and its campaign's outputs (the exports
    and the inference run, tested elsewhere for detectors, are left out: fewer jobs)."""
    return [f"results/{uc}/model/model_card.json"] + [
        f"results/{uc}/campaigns/survey/{name}" for name in ("predictions.parquet", "summary.json")
    ]


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detect_mlflow")
    data = scenes.write_dataset("fish", tmp / "data", 12, 4, (80, 80), seed=3).parent
    campaign = tmp / "campaign"
    scenes.write_images("fish", campaign, 4, (80, 80), seed=8)
    fish = detect_usecase(campaign, source={"kind": "path", "path": str(data)})
    fish["detection"]["train"] = {
        "epochs": EPOCHS,
        "batch": 8,
        "optimizer": "AdamW",
        "lr0": 0.003,
        "warmup_epochs": 0,
        "close_mosaic": 0,
        "validate_each_epoch": True,
        "device": "cpu",
        "augmentation": {"mosaic": 0.0},
    }
    wd = write_workdir(tmp / "wd", {"fish": fish})
    first = run_snakemake(wd, *targets("fish"), "results/fish/eval/metrics.json", "--set-scatter", "infer=1")
    return {"tmp": tmp, "wd": wd, "res": wd / "results", "campaign": campaign, "first": first, "fish": fish}


@pytest.fixture(scope="module")
def given(workflow):
    """The second run: a registry use case and a given-folder use case beside the trained one."""
    tmp, res = workflow["tmp"], workflow["res"]
    folder = tmp / "given_model"  # a detector trained elsewhere: weights + the card a user writes
    folder.mkdir()
    shutil.copyfile(res / "fish/model/model.pt", folder / "model.pt")
    write_json(
        {
            "format": "ultralytics",
            "task": "detect",
            "arch": "yolo11n.yaml",
            "classes": CLASSES,
            "input_size": SIZE,
            "normalization": {"preprocess": "Ultralytics letterbox to input_size, RGB / 255"},
        },
        folder / "model_card.json",
    )
    ucs = {
        "fish": workflow["fish"],
        "reef": detect_usecase(
            workflow["campaign"], model={"source": "mlflow", "uri": "models:/aquaflow_fish/1"}
        ),
        "given": detect_usecase(workflow["campaign"], model={"source": "path", "path": str(folder)}),
    }
    write_workdir(workflow["wd"], ucs)
    second = run_snakemake(workflow["wd"], *targets("reef"), *targets("given"), "--set-scatter", "infer=1")
    return {"folder": folder, "second": second}


def _card(res, uc) -> dict:
    return json.loads((res / uc / "model/model_card.json").read_text())


def _client(card, res):
    uri = tracking.store_uri(card["mlflow"]["tracking_uri"], res.parent)  # the workflow's folder
    return MlflowClient(uri, registry_uri=uri)


def test_training_run_has_params_metrics_per_epoch_and_the_model_folder(workflow):
    res = workflow["res"]
    card = _card(res, "fish")
    assert card["mlflow"]["tracking_uri"] == "sqlite:///results/mlflow/mlflow.db"  # no local path
    client = _client(card, res)
    run = client.get_run(card["mlflow"]["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == "fish-train"
    tags = run.data.tags
    assert (tags["usecase"], tags["step"], tags["backend"], tags["task"]) == (
        "fish",
        "train",
        "ultralytics",
        "detect",
    )
    assert tags["model_id"] == card["id"] == sha256_file(res / "fish/model/model.pt")
    params = run.data.params
    assert params["training.epochs"] == str(EPOCHS) and params["imgsz"] == str(SIZE)
    assert (
        params["model.family"] == "yolo11" and params["task"] == "detect" and params["images.train"] == "12"
    )

    history = pd.read_csv(res / "fish/model/history.tsv", sep="\t")
    assert history["epoch"].tolist() == [1, 2]
    for column, key in [("train/box_loss", "train/box_loss"), ("metrics/mAP50(B)", "metrics/mAP50B")]:
        got = sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))
        assert got == [(int(e), float(v)) for e, v in zip(history["epoch"], history[column], strict=True)]
    assert run.data.metrics["train_seconds"] > 0
    print(f"training run: {run.data.metrics['train_seconds']:.1f} s, metrics {sorted(run.data.metrics)}")

    model = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert model == {"model/model.pt", "model/model_card.json"}
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model_card.json", "history.tsv", "training_curve.png", "model"} <= top


def test_evaluation_figures_join_the_training_run(workflow):
    res = workflow["res"]
    card = _card(res, "fish")
    metrics = json.loads((res / "fish/eval/metrics.json").read_text())
    split = metrics["split"]
    run = _client(card, res).get_run(card["mlflow"]["run_id"])
    assert run.data.metrics[f"{split}_mAP50"] == pytest.approx(metrics["record"]["mAP50"])
    assert run.data.metrics[f"{split}_recall"] == pytest.approx(metrics["at_threshold"]["all"]["recall"])
    files = {a.path for a in _client(card, res).list_artifacts(run.info.run_id, f"eval_{split}")}
    assert files == {f"eval_{split}/{f}" for f in ("metrics.json", "summary.tsv", "per_class.tsv")}


def test_registered_version(workflow):
    card = _card(workflow["res"], "fish")
    client = _client(card, workflow["res"])
    (mv,) = client.search_model_versions("name = 'aquaflow_fish'")
    assert str(mv.version) == "1" and mv.run_id == card["mlflow"]["run_id"]
    assert mv.source == f"runs:/{card['mlflow']['run_id']}/model"
    assert mv.tags["model_id"] == card["id"] and mv.tags["task"] == "detect"


def _predictions(res, uc) -> pd.DataFrame:
    table = pd.read_parquet(res / uc / "campaigns/survey/predictions.parquet")
    table["name"] = table["source"].map(lambda s: s.rsplit("/", 1)[-1])
    return table.sort_values(["name", "det"]).reset_index(drop=True)


@pytest.mark.parametrize("uc", ["reef", "given"])
def test_given_detector_predicts_the_campaign_without_training(workflow, given, uc):
    res = workflow["res"]
    jobs = given["second"].stderr
    stats = jobs[jobs.index("Job stats:") :].split("\n\n")[0]
    assert "train_detect" not in stats and "detect_prepare" not in stats
    assert "import_ultralytics_model" in stats
    assert not (res / uc / "model/history.tsv").exists() and not (res / uc / "logs/train_detect.log").exists()

    card = _card(res, uc)
    fish = _card(res, "fish")
    assert card["id"] == sha256_file(res / uc / "model/model.pt") == fish["id"]
    expected_source = (
        {"source": "mlflow", "uri": "models:/aquaflow_fish/1"}
        if uc == "reef"
        else {"source": "path", "path": str(given["folder"])}
    )
    assert card["imported_from"] == expected_source

    summary = json.loads((res / uc / "campaigns/survey/summary.json").read_text())
    assert summary["seen"] == summary["predicted"] == 4
    ours, theirs = _predictions(res, uc), _predictions(res, "fish")
    assert len(theirs) > 0 and len(ours) == len(theirs)
    print(f"{uc}: {len(ours)} detections on 4 images, the trained use case's exactly")
    assert (ours["model_id"] == fish["id"]).all()
    assert (
        ours["name"].tolist() == theirs["name"].tolist()
        and ours["class"].tolist() == theirs["class"].tolist()
    )
    cols = ["score", "x", "y", "w", "h"]
    pd.testing.assert_frame_equal(ours[cols], theirs[cols], atol=1e-5, rtol=0)
