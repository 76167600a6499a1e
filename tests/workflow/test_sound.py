"""The underwater-sound use case end to end (one Snakemake run on CPU): synthetic recordings at
16 kHz -> training (2 epochs) -> a campaign of FLAC recordings, with a truncated and an empty file,
sharded -> per-window, per-file and per-hour tables, spectrograms, MLflow runs, RO-Crate, report.
In the same run a second use case is given the trained model folder (model.source: path) and
predicts the same campaign without training; its registry version imports as the same model."""

from __future__ import annotations

import json
import zipfile
from datetime import datetime

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from aquaflow.backends.sound.model import import_given
from aquaflow.data import audio
from aquaflow.models.artifacts import read_card
from aquaflow.monitoring.tracking import store_uri
from aquaflow.synthetic import sound
from tests.conftest import REPO, provenance_run_crate_jobs, run_snakemake, write_workdir

pytestmark = pytest.mark.workflow

RATE, WINDOW = 16000, 4.0


def _usecase(data) -> dict:
    uc = yaml.safe_load((REPO / "config/usecases/underwater_noise.yaml").read_text())
    uc["source"] = {"kind": "path", "path": str(data)}
    uc["sound"]["audio"] = {
        "sample_rate": RATE,
        "length_s": WINDOW,
        "hop_s": WINDOW,
        "tail": "pad",
        "block_s": 3.0,
    }
    uc["sound"]["mel"] = {"n_fft": 512, "hop_length": 256, "n_mels": 32}
    uc["sound"]["training"] = {"epochs": 2, "batch": 8}
    uc["sound"]["spectrograms"] = 3
    uc["campaigns"]["demo"]["inputs"][0]["path"] = str(data / "campaign")
    return uc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("sound")
    data = work / "data"
    sound.collection(data / "train", n_files=8, duration_s=20.0, rate=RATE, window_s=WINDOW, seed=1)
    sound.collection(
        data / "campaign",
        n_files=3,
        duration_s=18.0,
        rate=RATE,
        window_s=WINDOW,
        stations=("NB03",),
        start=datetime(2024, 7, 1, 23, 59, 50),
        seed=2,
        ext="flac",
    )
    good = (data / "campaign/NB03_20240701_235950.flac").read_bytes()
    (data / "campaign/NB03_20240702_010000.flac").write_bytes(good[: len(good) // 3])
    (data / "campaign/NB03_20240702_020000.wav").write_bytes(b"")
    trained = _usecase(data)
    given = {k: v for k, v in trained.items() if k != "source"}  # nothing to train
    given |= {"model": GIVEN, "export": {"ecotaxa": {"enabled": False}, "rocrate": {"enabled": False}}}
    write_workdir(work, {"underwater_noise": trained, "sound_given": given})
    run_snakemake(work)  # the given model is imported once training wrote it (its card is an input)
    run_snakemake(work, "--report", "results/report.html")
    return work, data


GIVEN = {"source": "path", "path": "results/underwater_noise/model"}
REGISTERED = {"source": "mlflow", "uri": "models:/aquaflow_underwater_noise/1"}


def test_windows_tables_and_ledger(run):
    work, _ = run
    camp = work / "results/underwater_noise/campaigns/demo"
    summary = json.loads((camp / "summary.json").read_text())
    assert (summary["seen"], summary["predicted"], summary["rejected"]) == (5, 3, 2)
    assert summary["rejected_by_reason"] == {"decode_error": 1, "zero_length": 1}
    pred = pd.read_parquet(camp / "predictions.parquet")
    spec = audio.WindowSpec(sample_rate=RATE, length_s=WINDOW, hop_s=WINDOW)
    expect = {f: audio.covered(spec, 18 * RATE)[0] for f in sorted(set(pred["file"]))}
    assert len(expect) == 3 and all(n == 5 for n in expect.values())
    assert pred.groupby("file").size().to_dict() == expect  # 4 full windows + 1 padded (2 s) each
    assert sum(s["windows"] for s in summary["shards"].values()) == len(pred) == 15
    assert len(summary["shards"]) == 2  # sharded like images
    assert set(pred["label"]) <= set(sound.CLASSES) and pred["expected_km"].between(0, 12).all()
    first = pred[pred["file"] == "NB03_20240701_235950.flac"].sort_values("window")
    assert first["start_utc"].tolist()[:3] == [
        pd.Timestamp(f"2024-07-0{d} {t}", tz="UTC")
        for d, t in ((1, "23:59:50"), (1, "23:59:54"), (1, "23:59:58"))
    ]
    per_file = pd.read_csv(camp / "per_file.tsv", sep="\t").set_index("file")
    assert per_file["windows"].to_dict() == expect
    n_cols = [f"n_{c}" for c in sound.CLASSES]
    assert [c for c in per_file.columns if c.startswith("n_")] == n_cols
    assert (per_file[n_cols].sum(axis=1) == per_file["windows"]).all()
    per_hour = pd.read_csv(camp / "per_hour.tsv", sep="\t")
    assert per_hour["windows"].sum() == 15
    first_hours = per_hour[per_hour["hour_utc"].astype(str).str.startswith("2024-07-01 23")]
    assert first_hours["windows"].sum() == 3  # 23:59:50, :54, :58; the rest after midnight
    occ = (pred["label"] != "none").groupby(pred["file"]).mean()
    assert per_file["occupancy"].to_dict() == pytest.approx(occ.to_dict())
    assert 1 <= len(list((camp / "spectrograms").glob("*.png"))) <= 3 or (pred["label"] == "none").all()


def test_model_mlflow_provenance_report(run):
    work, _ = run
    res = work / "results/underwater_noise"
    card = read_card(res / "model/model_card.json")
    assert card["task"] == "sound" and card["backend"] == "sound_cnn" and card["mlflow"]["run_id"]
    metrics = json.loads((res / "eval/metrics.json").read_text())
    assert {"accuracy", "rmse_bins", "rmse_km", "mae_km"} <= set(metrics)
    ints = metrics["intervals"]
    assert ints["method"] == "percentile bootstrap over windows" and ints["resamples"] == 1000
    low, high = ints["accuracy"]
    assert 0 <= low <= high <= 1 and card["metrics"]["test_accuracy_low"] == low
    assert len(pd.read_csv(res / "model/history.tsv", sep="\t")) == 2
    run_info = json.loads((res / "campaigns/demo/mlflow_run.json").read_text())
    assert run_info["run_id"]
    with zipfile.ZipFile(res / "campaigns/demo/export/rocrate_underwater_noise_demo.zip") as z:
        names = z.namelist()
    assert "ro-crate-metadata.json" in names and any(n.endswith("predictions.parquet") for n in names)
    # a Provenance Run Crate: one action per job upstream of the campaign, from Snakemake's records
    crate = res / "campaigns/demo/export/rocrate_underwater_noise_demo.zip"
    jobs = provenance_run_crate_jobs(crate, work / "prov")
    shards = len(list((res / "campaigns/demo/summaries").glob("*.json")))
    assert jobs["sound_shard"] == shards >= 1
    assert jobs["train_sound"] == jobs["sound_gather"] == 1
    html = (work / "results/report.html").read_text(errors="replace")
    assert "per_hour.tsv" in html and "training_curve.png" in html


def test_trained_model_is_registered_and_imports_from_the_registry(run, tmp_path):
    work, _ = run
    card = read_card(work / "results/underwater_noise/model/model_card.json")
    uri = store_uri(card["mlflow"]["tracking_uri"], work)  # published relative to the workflow's folder
    mv = MlflowClient(uri, registry_uri=uri).get_model_version("aquaflow_underwater_noise", "1")
    assert mv.run_id == card["mlflow"]["run_id"] and mv.source == f"runs:/{mv.run_id}/model"
    assert mv.tags["model_id"] == card["id"] and mv.tags["task"] == "sound"
    mlflow_cfg = {"tracking_uri": uri, "results": str(work / "results")}
    got = import_given(
        REGISTERED, "sound_cnn", tmp_path / "model.safetensors", tmp_path / "model_card.json", mlflow_cfg
    )
    assert (
        got["id"] == card["id"] and got["imported_from"] == REGISTERED
    )  # the same weights: same predictions


def test_given_sound_model_predicts_the_campaign_without_training(run):
    work, _ = run
    res = work / "results"
    assert not (res / "sound_given/model/history.tsv").exists() and not (res / "sound_given/eval").exists()
    trained = read_card(res / "underwater_noise/model/model_card.json")
    card = read_card(res / "sound_given/model/model_card.json")
    assert card["id"] == trained["id"] and card["imported_from"] == GIVEN
    cols = ["file", "window", "start_utc", "label", "distance_bin", "model_id"]
    cols += [f"p_{c}" for c in sound.CLASSES] + ["expected_km"]
    ours = pd.read_parquet(res / "sound_given/campaigns/demo/predictions.parquet")[cols]
    theirs = pd.read_parquet(res / "underwater_noise/campaigns/demo/predictions.parquet")[cols]
    ours, theirs = (df.sort_values(["file", "window"]).reset_index(drop=True) for df in (ours, theirs))
    assert len(ours) == 15
    pd.testing.assert_frame_equal(ours, theirs, atol=1e-5)
    summary = json.loads((res / "sound_given/campaigns/demo/summary.json").read_text())
    assert (summary["seen"], summary["predicted"], summary["rejected"]) == (5, 3, 2)
