"""The FlowCam demo campaign's standard outputs, checked with tools that are not ours: a DwC-A
(python-dwca-reader, TDWG text XSD, pyobistools), an EcoTaxa ZIP bundle (importer rules) and a
Workflow Run RO-Crate (rocrate, roc-validator)."""

from __future__ import annotations

import json
import shutil
import zipfile

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient
from rocrate.rocrate import ROCrate

from aquaflow.io import sha256_file
from aquaflow.monitoring import tracking
from aquaflow.standards import dwca, taxonomy

from ..conftest import REPO, run_snakemake, validate_rocrate
from ..dwca_checks import meta_xml_errors, obis_problems, read_archive
from ..unit.test_ecotaxa import reimport
from ..wf_b_fixtures import DEMO, demo_done

pytestmark = pytest.mark.workflow


@pytest.fixture(scope="module")
def demo(tmp_path_factory, flowcam_trained):
    """The demo campaign and its exports, after the session's tiny training (shared, read-only)."""
    work = demo_done(tmp_path_factory, flowcam_trained)
    return work, work / DEMO


def test_dwca_validates_and_counts_match_predictions(demo):
    _, res = demo
    archive = res / "export/dwca_flowcam_demo.zip"
    pred = pd.read_parquet(res / "predictions.parquet")
    assert meta_xml_errors(archive) == []
    ev, occ, emof = read_archive(archive)
    # the sample with its station visit and cruise above it (parentEventID), parents first
    assert list(ev["eventID"]) == [
        "example_cruise_2024_05",
        "example_cruise_2024_05_st07",
        "planktonclas_demo",
    ]
    assert list(ev["parentEventID"]) == ["", "example_cruise_2024_05", "example_cruise_2024_05_st07"]
    assert obis_problems(ev, occ, emof) == []
    # every demo class has a verified AphiaID: all objects are published, each with its exact count
    # (Dinoflagellata and Noctilucales are both published as class Dinophyceae: one occurrence)
    report = json.loads((res / "export/dwca_flowcam_demo.json").read_text())
    per_label = pred["top1_label"].value_counts().to_dict()
    assert {k: v["objects"] for k, v in report["labels"].items()} == per_label
    assert report["excluded_unverified"] == [] and report["objects_in_occurrences"] == len(pred)
    table = taxonomy.read_table(REPO / "config/taxonomy/flowcam.tsv")
    expected: dict[str, int] = {}
    for label, n in per_label.items():
        name = table[label].scientific_name
        expected[name] = expected.get(name, 0) + n
    counts = emof[emof["measurementTypeID"] == dwca.COUNT[1]].merge(occ, on=["eventID", "occurrenceID"])
    got = dict(zip(counts["scientificName"], counts["measurementValue"].astype(int), strict=True))
    assert got == expected
    assert occ["scientificNameID"].str.match(r"^urn:lsid:marinespecies\.org:taxname:\d+$").all()
    assert set(occ["basisOfRecord"]) <= {"MachineObservation"}
    assert all(
        card_id in r for r in occ["identificationReferences"] for card_id in [pred["model_id"].iloc[0]]
    )
    # abundance per m³ from the sample table's 5.2 mL
    abundance = emof[emof["measurementTypeID"] == dwca.ABUNDANCE[1]]["measurementValue"].astype(float)
    assert list(abundance) == pytest.approx([v / 5.2e-6 for v in got.values()], rel=1e-5)


def test_ecotaxa_bundle_reimports(demo):
    _, res = demo
    tsv = res / "export/ecotaxa_flowcam_demo.tsv"
    df = reimport(tsv)
    pred = pd.read_parquet(res / "predictions.parquet")
    assert len(df) == len(pred) and df["object_id"].str.startswith("planktonclas_demo_").all()
    assert list(df["object_sha256"]) == list(pred["id"])
    with zipfile.ZipFile(res / "export/ecotaxa_flowcam_demo.zip") as zf:
        names = zf.namelist()
        assert len(names) == len(set(names)) == len(df) + 1 and set(df["img_file_name"]) <= set(names)


def test_rocrate_loads_and_validates(demo, tmp_path):
    work, res = demo
    crate_zip = res / "export/rocrate_flowcam_demo.zip"
    with zipfile.ZipFile(crate_zip) as zf:
        zf.extractall(tmp_path / "crate")
    crate = ROCrate(tmp_path / "crate")
    assert crate.mainEntity.id == "workflow/Snakefile"
    actions = [e for e in crate.get_entities() if e.type == "CreateAction"]
    (action,) = [a for a in actions if a["instrument"].id == crate.mainEntity.id]
    results = {e.id: e for e in action["result"]}
    assert results["outputs/dwca_flowcam_demo.zip"]["sha256"] == sha256_file(
        res / "export/dwca_flowcam_demo.zip"
    )
    assert results["outputs/predictions.parquet"]["sha256"] == sha256_file(res / "predictions.parquet")
    objects = {e.id for e in action["object"]}
    assert {"inputs/model_card.json", "inputs/flowcam_demo.csv", "inputs/flowcam.tsv"} <= objects
    card = json.loads((work / "results/flowcam/model/model_card.json").read_text())
    assert f"mlflow-run:{card['mlflow']['run_id']}" in str(action["identifier"])
    assert action["startTime"] <= action["endTime"]
    assert (
        action["agent"]["name"] == "A. Tester" and crate.root_dataset["publisher"]["name"] == "Test Institute"
    )
    cfg = yaml.safe_load((tmp_path / "crate/config/resolved_config.yaml").read_text())
    assert cfg["training"]["epochs"] == 3 and cfg["campaign"]["samples"]["column"] == "sample_id"
    # one action per executed job upstream, from Snakemake's own records (.snakemake/metadata)
    jobs = [a for a in actions if a is not action]
    rules = {a["instrument"]["name"].removeprefix("rule ") for a in jobs}
    assert {"train", "infer_inputs", "infer_shard", "infer_gather", "export_dwca", "export_ecotaxa"} <= rules
    assert sum(a["name"] == "rule infer_shard" for a in jobs) == 2  # the demo's two shards
    (gather,) = [a for a in jobs if a["name"] == "rule infer_gather"]
    made = {e.id: e for e in (gather["result"] if isinstance(gather["result"], list) else [gather["result"]])}
    assert made["outputs/predictions.parquet"]["sha256"] == sha256_file(res / "predictions.parquet")
    assert all(a["startTime"] <= a["endTime"] for a in jobs)
    assert {t.id for t in crate.mainEntity["hasPart"]} == {
        f"https://git.example.org/aquaflow/tree/v0#rule-{r}" for r in rules
    }
    assert validate_rocrate(crate_zip, tmp_path / "http-cache") == []
    assert validate_rocrate(crate_zip, tmp_path / "http-cache", "provenance-run-crate-0.5") == []
    # RECOMMENDED: only the main workflow's id, relative in a crate read from a local file (it
    # resolves to file://...; published over https it is absolute)
    notes = validate_rocrate(crate_zip, tmp_path / "http-cache", severity="RECOMMENDED")
    assert notes == ["RECOMMENDED: The SoftwareApplication id SHOULD be an absolute URI"] * 2


def test_published_files_name_no_local_path_and_the_store_still_opens(demo, flowcam_trained):
    """The model card, mlflow_run.json and every file of the RO-Crate (which copies the card) name
    the local MLflow store relative to the working directory, never the absolute path of the
    folder the workflow ran in (nor of the one it trained in); the store opens from there through
    tracking.store_uri, and the evaluation's test figures are in the training run."""
    work, res = demo
    card_path = work / "results/flowcam/model/model_card.json"
    texts = {"card": card_path.read_text(), "mlflow_run.json": (res / "mlflow_run.json").read_text()}
    with zipfile.ZipFile(res / "export/rocrate_flowcam_demo.zip") as zf:
        texts |= {n: zf.read(n).decode("utf-8", "replace") for n in zf.namelist()}
    local = {str(p) for folder in (work, flowcam_trained) for p in (folder, folder.resolve())}
    assert not [(name, p) for name, text in texts.items() for p in local if p in text]
    card, run_info = json.loads(texts["card"]), json.loads(texts["mlflow_run.json"])
    assert card["mlflow"]["tracking_uri"] == run_info["tracking_uri"] == "sqlite:///results/mlflow/mlflow.db"
    assert json.loads(texts["inputs/model_card.json"])["mlflow"] == card["mlflow"]
    client = MlflowClient(tracking.store_uri(card["mlflow"]["tracking_uri"], work))
    assert "test_accuracy" in client.get_run(card["mlflow"]["run_id"]).data.metrics  # evaluation joined
    assert client.get_run(run_info["run_id"]).data.tags["step"] == "inference"


def test_editing_eml_reruns_only_the_exports(demo, tmp_path):
    work = shutil.copytree(demo[0], tmp_path / "work", symlinks=True)
    path = work / "config/usecases/flowcam.yaml"
    uc = yaml.safe_load(path.read_text())
    uc["export"]["dwca"]["eml"]["title"] = "A new title"
    path.write_text(yaml.safe_dump(uc, sort_keys=False))
    proc = run_snakemake(work, "-n", "--quiet", "rules")
    jobs = {line.split()[0] for line in proc.stdout.splitlines() if line.strip().startswith("export_")}
    assert jobs == {"export_dwca", "export_rocrate"}, proc.stdout
    assert "train" not in proc.stdout.split() and "infer_shard" not in proc.stdout.split()
