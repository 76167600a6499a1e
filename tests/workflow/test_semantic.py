"""Task semantic end to end on synthetic SAR-like scenes (aquaflow.synthetic.sar), on CPU at a
token budget: one Snakemake run prepares, trains (1 epoch: the path, not the model), evaluates
with FSS at 1, 5, 11 px, predicts a campaign of the labelled scenes plus an unreadable raster,
gathers, tests the campaign's drift (band pixels, class cover), logs its MLflow run and writes its
RO-Crate. What is asserted: every output
raster and GeoPackage has its input's CRS, transform and shape; counts reconcile (the broken
raster is rejected, not lost); the card records the bands and the training rasters' statistics;
a second run has nothing to do."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import yaml

from aquaflow.models.artifacts import read_card
from aquaflow.standards.taxonomy import Taxon, write_table
from aquaflow.synthetic import sar
from tests.conftest import REPO, provenance_run_crate_jobs, run_snakemake, write_workdir
from tests.dwca_checks import read_archive

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    work = tmp_path_factory.mktemp("semantic")
    sar.make(work / "data", scenes=3, size=128, seed=1)
    broken = work / "more"
    broken.mkdir()
    (broken / "truncated.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    uc = yaml.safe_load((REPO / "config/usecases/oil_spill.yaml").read_text())
    uc["source"] = {"kind": "path", "path": str(work / "data")}
    sem = uc["semantic"]
    sem["data"]["split"] = {"val": 0.34, "test": 0.34, "seed": 0}  # one raster each
    sem["train"].update({"epochs": 1, "tile": 64, "tile_overlap": 0, "batch_size": 4})
    sem["model"]["decoder_channels"] = [16, 16, 8, 8, 8]
    sem["predict"] = {"tile": 64, "overlap": 16, "block": 128, "batch": 4}
    uc["campaigns"]["demo"]["inputs"] = [{"kind": "dataset"}, {"kind": "folder", "path": str(broken)}]
    uc["drift"] = {"enabled": True, "batch": {"min_size": 2}}  # 3 rasters: one tested batch
    # a Darwin Core Archive with each raster its own sample; sea and oil are no taxa: events only
    (work / "samples.csv").write_text(
        "eventID,eventDate,decimalLatitude,decimalLongitude,countryCode\n"
        + "".join(f"scene_{i:02d},2025-07-0{i + 1},42.{i},3.5,ES\n" for i in range(4))
    )
    write_table([Taxon(c, status="not_a_taxon") for c in ("sea", "oil")], work / "taxa.tsv")
    uc["campaigns"]["demo"]["samples"] = {"path": str(work / "samples.csv"), "column": "id"}
    uc["export"]["dwca"] = {"taxonomy": str(work / "taxa.tsv")}
    write_workdir(work, {"oil": uc})
    proc = run_snakemake(work, "--set-scatter", "infer=1")
    return work, proc


def test_model_card_and_evaluation_with_fss(run) -> None:
    work, _ = run
    card = read_card(work / "results/oil/model/model_card.json")
    assert card["mlflow"]["run_id"]  # the training run (tracking.log_training, as every trainer)
    assert (card["backend"], card["task"], card["bands"], card["classes"]) == (
        "smp",
        "semantic",
        [1],
        ["sea", "oil"],
    )
    manifest = pd.read_parquet(work / "results/oil/semantic/manifest.parquet")
    assert sorted(manifest["split"]) == ["test", "train", "val"]
    train_image = manifest.loc[manifest["split"] == "train", "image"].iloc[0]
    with rasterio.open(work / train_image) as src:
        band = src.read(1, masked=True)
    assert card["normalization"]["mean"] == pytest.approx([float(band.mean())], rel=1e-4)
    metrics = json.loads((work / "results/oil/eval/metrics.json").read_text())
    assert metrics["split"] == "test" and set(metrics["fss"]["oil"]) == {"1", "5", "11"}
    assert all(0 <= v <= 1 for v in metrics["fss"]["oil"].values())
    assert 0 <= metrics["mean_iou"] <= 1 and np.array(metrics["confusion"]).sum() == metrics["pixels"]
    # intervals resample test rasters: one test raster here, so the block says how and holds none
    assert metrics["intervals"] == {
        "method": "percentile bootstrap over rasters",
        "resamples": 1000,
        "level": 0.95,
        "seed": 0,
    }
    summary = pd.read_csv(work / "results/oil/eval/summary.tsv", sep="\t")
    assert "FSS oil 11 px" in set(summary["metric"])
    assert len(list((work / "results/oil/eval/overlays").glob("*.png"))) == 1


def test_campaign_outputs_keep_the_input_grid_and_counts_reconcile(run) -> None:
    work, _ = run
    camp = work / "results/oil/campaigns/demo"
    summary = json.loads((camp / "summary.json").read_text())
    assert (summary["seen"], summary["predicted"], summary["rejected"]) == (4, 3, 1)
    assert summary["per_class"]["sea"] + summary["per_class"]["oil"] > 0.8 * 3 * 128 * 128
    rejected = pd.read_parquet(camp / "rejected.parquet")
    assert list(rejected["id"]) == ["truncated"] and list(rejected["reason"]) == ["unreadable"]
    predictions = pd.read_parquet(camp / "predictions.parquet")
    assert sorted(predictions["id"]) == ["scene_00", "scene_01", "scene_02"]
    assert predictions["fss_oil_5"].notna().all()  # labelled: scored
    for row in predictions.itertuples():
        with rasterio.open(work / row.image) as src:
            grid = (src.crs, src.transform, src.shape)
        for path, bands in ((row.classes_path, 1), (row.probabilities_path, 2)):
            with rasterio.open(work / path) as out:
                assert (out.crs, out.transform, out.shape, out.count) == (*grid, bands)
        info = pyogrio.read_info(work / row.polygons_path)
        assert rasterio.crs.CRS.from_user_input(info["crs"]) == grid[0]
        assert info["features"] == row.polygons_oil
    assert json.loads((camp / "mlflow_run.json").read_text())["run_id"]  # the inference run
    with zipfile.ZipFile(camp / "export/rocrate_oil_demo.zip") as z:
        crate = json.loads(z.read("ro-crate-metadata.json"))
    assert any("semantic" in str(e.get("description", "")).lower() for e in crate["@graph"])
    # the DwC-A: an event per predicted raster (the rejected one is none), its instrument; no taxon
    ev, occ, emof = read_archive(camp / "export/dwca_oil_demo.zip")
    assert list(ev["eventID"]) == ["scene_00", "scene_01", "scene_02"] and occ.empty
    assert list(emof["measurementValue"]) == ["SAR (synthetic)"] * 3
    report = json.loads((camp / "export/dwca_oil_demo.json").read_text())
    present = sum(int((predictions[f"pixels_{c}"] > 0).sum()) for c in ("sea", "oil"))
    assert report["excluded_not_a_taxon"] == ["oil", "sea"] and report["objects"] == present >= 3
    # a Provenance Run Crate: one action per job upstream of the campaign, from Snakemake's records
    jobs = provenance_run_crate_jobs(camp / "export/rocrate_oil_demo.zip", work / "prov")
    shards = len(list((camp / "semantic").glob("*.json")))
    assert jobs["semantic_shard"] == shards >= 1
    assert {"semantic_prepare", "train_semantic", "semantic_inputs", "semantic_gather"} <= set(jobs)
    assert jobs["train_semantic"] == jobs["semantic_gather"] == 1
    table = pd.read_csv(work / "results/oil/campaigns/summary.tsv", sep="\t")
    assert set(table.loc[table["scope"] == "class", "name"]) == {"sea", "oil"}


def test_drift_of_the_campaign_tests_band_pixels_and_class_cover(run) -> None:
    work, _ = run
    res = work / "results/oil"
    meta = json.loads((res / "model/drift_reference.json").read_text())
    assert meta["images"] == 1 and meta["pixels_per_band"] > 0  # the training raster
    report = json.loads((res / "campaigns/demo/drift/drift.json").read_text())
    assert report["images"] == 3 and "mmd" in report["unavailable"]  # no embeddings: listed
    assert set(report["overall"]["tests"]) == {"ks_band_1", "cover_sea", "cover_oil"}
    assert isinstance(report["overall"]["drift"], bool)
    assert json.loads((res / "campaigns/demo/drift/policy.json").read_text())


def test_second_run_does_nothing_and_a_prediction_edit_does_not_retrain(run) -> None:
    work, _ = run
    proc = run_snakemake(work, "--set-scatter", "infer=1", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr
    path = work / "config/usecases/oil.yaml"
    before = path.read_text()
    uc = yaml.safe_load(before)
    uc["semantic"]["predict"]["overlap"] = 24
    path.write_text(yaml.safe_dump(uc, sort_keys=False))
    try:
        out = run_snakemake(work, "--set-scatter", "infer=1", "-n").stdout
    finally:
        path.write_text(before)
    table = out.split("Job stats:")[1].split("\ntotal")[0].splitlines()[3:]  # the rows: rule, count
    reruns = {line.split()[0] for line in table if line.strip()}
    assert {"evaluate_semantic", "semantic_shard", "semantic_gather", "drift_reference_semantic"} <= reruns
    assert not reruns & {"train_semantic", "semantic_prepare", "semantic_inputs", "fetch"}


@pytest.fixture(scope="module")
def given(run):
    """A second run beside the trained use case: the model folder it wrote given by path
    (`oil_path`) and its registered version by registry reference (`oil_registry`); both predict a
    folder campaign of the same scenes and have no `source` (nothing to train or evaluate on)."""
    work, _ = run
    base = yaml.safe_load((work / "config/usecases/oil.yaml").read_text())
    models = {
        "oil_path": {"source": "path", "path": str(work / "results/oil/model")},
        "oil_registry": {"source": "mlflow", "uri": "models:/aquaflow_oil/1"},
    }
    config = yaml.safe_load((work / "config/config.yaml").read_text())
    for name, model in models.items():
        uc = {k: v for k, v in base.items() if k not in ("source", "campaigns", "drift")}
        uc["model"] = model
        uc["campaigns"] = {"demo": {"inputs": [{"kind": "folder", "path": str(work / "data/images")}]}}
        (work / f"config/usecases/{name}.yaml").write_text(yaml.safe_dump(uc, sort_keys=False))
        config["usecases"][name] = f"config/usecases/{name}.yaml"
    (work / "config/config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    targets = [f"results/{n}/campaigns/demo/predictions.parquet" for n in models]
    return work, run_snakemake(work, *targets, "--set-scatter", "infer=1")


@pytest.mark.parametrize("uc", ["oil_path", "oil_registry"])
def test_given_model_predicts_the_campaign_as_the_trained_one(given, uc) -> None:
    work, proc = given
    stats = proc.stderr[proc.stderr.index("Job stats:") :].split("\n\n")[0]
    assert "import_model" in stats and "train_semantic" not in stats and "semantic_prepare" not in stats
    trained = read_card(work / "results/oil/model/model_card.json")
    card = read_card(work / f"results/{uc}/model/model_card.json")
    assert card["id"] == trained["id"] and card["task"] == "semantic" and card["backend"] == "smp"
    assert card["imported_from"]["source"] == {"oil_path": "path", "oil_registry": "mlflow"}[uc]
    if uc == "oil_registry":  # the training run registered the model it wrote
        from mlflow.tracking import MlflowClient

        from aquaflow.monitoring.tracking import store_uri

        uri = store_uri(trained["mlflow"]["tracking_uri"], work)  # relative to the workflow's folder
        version = MlflowClient(uri, registry_uri=uri).get_model_version("aquaflow_oil", "1")
        assert version.run_id == trained["mlflow"]["run_id"]
    ours = pd.read_parquet(work / f"results/{uc}/campaigns/demo/predictions.parquet").set_index("id")
    theirs = pd.read_parquet(work / "results/oil/campaigns/demo/predictions.parquet").set_index("id")
    assert sorted(ours.index) == ["scene_00", "scene_01", "scene_02"]
    for rid in ours.index:
        with (
            rasterio.open(work / ours.at[rid, "classes_path"]) as a,
            rasterio.open(work / theirs.at[rid, "classes_path"]) as b,
        ):
            assert (a.crs, a.transform) == (b.crs, b.transform)
            assert np.array_equal(a.read(1), b.read(1))  # class rasters equal
