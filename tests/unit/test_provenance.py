"""Workflow Run RO-Crate: loads back with rocrate, passes roc-validator for the profile it claims."""

from __future__ import annotations

import json
import zipfile

from rocrate.rocrate import ROCrate

from aquaflow.io import sha256_file
from aquaflow.standards import provenance

from ..conftest import REPO, validate_rocrate


def test_crate_roundtrip_and_profile(tmp_path):
    (tmp_path / "card.json").write_text(json.dumps({"id": "ab" * 32}))
    (tmp_path / "dwca.zip").write_bytes(b"PK-not-really")
    (tmp_path / "predictions.parquet").write_bytes(b"rows")
    cfg = {"source": {"license": "Apache-2.0"}, "training": {"epochs": 3}}
    provenance.write(
        tmp_path / "crate.zip",
        name="flowcam campaign demo",
        snakefile=REPO / "Snakefile",
        rule_files=sorted((REPO / "workflow").glob("*.smk")),
        config=cfg,
        inputs={"model card": tmp_path / "card.json"},
        outputs={"dwca": tmp_path / "dwca.zip", "predictions": tmp_path / "predictions.parquet"},
        mlflow_runs=["0123abcd"],
        start=1_700_000_000,
        end=1_700_000_600,
    )
    with zipfile.ZipFile(tmp_path / "crate.zip") as zf:
        zf.extractall(tmp_path / "crate")
    crate = ROCrate(tmp_path / "crate")
    assert crate.mainEntity.id == "workflow/Snakefile"
    assert "ComputationalWorkflow" in crate.mainEntity.type
    assert crate.mainEntity["programmingLanguage"].id.endswith("#snakemake")
    (action,) = [e for e in crate.get_entities() if e.type == "CreateAction"]
    assert action["instrument"].id == crate.mainEntity.id
    assert (
        action["startTime"] == "2023-11-14T22:13:20+00:00"
        and action["endTime"] == "2023-11-14T22:23:20+00:00"
    )
    assert action["identifier"] == "mlflow-run:0123abcd" or action["identifier"] == ["mlflow-run:0123abcd"]
    objects = {e.id: e for e in action["object"]}
    results = {e.id: e for e in action["result"]}
    assert "config/resolved_config.yaml" in objects and "inputs/card.json" in objects
    assert objects["inputs/card.json"]["sha256"] == sha256_file(tmp_path / "card.json")
    assert results["outputs/dwca.zip"]["sha256"] == sha256_file(tmp_path / "dwca.zip")
    assert (tmp_path / "crate/config/resolved_config.yaml").read_text().startswith("source:")
    soft = {e["name"]: e["softwareVersion"] for e in crate.mainEntity["softwareRequirements"]}
    assert {"python", "aquaflow", "snakemake"} <= set(soft)
    conforms = {c.id for c in crate.root_dataset["conformsTo"]}
    assert provenance.PROFILES["workflow"] in conforms
    assert validate_rocrate(tmp_path / "crate.zip", tmp_path / "http-cache") == []


def test_validator_catches_a_broken_crate(tmp_path):
    """The offline validation bites: the same crate passes with the Workflow Run Crate profile
    reference in the root's conformsTo, and fails naming exactly that without it."""
    (tmp_path / "a.txt").write_text("a")

    def crate():
        return provenance.build(
            name="x",
            snakefile=REPO / "Snakefile",
            rule_files=[],
            config={},
            config_path=tmp_path / "a.txt",
            inputs={"a": tmp_path / "a.txt"},
            outputs={"a": tmp_path / "a.txt"},
            mlflow_runs=[],
        )

    crate().write_zip(tmp_path / "good.zip")
    assert validate_rocrate(tmp_path / "good.zip", tmp_path / "http-cache") == []
    broken = crate()
    del broken.root_dataset["conformsTo"]
    broken.write_zip(tmp_path / "bad.zip")
    (issue,) = validate_rocrate(tmp_path / "bad.zip", tmp_path / "http-cache")
    assert issue.startswith("REQUIRED: The Root Data Entity MUST reference a CreativeWork entity")
    assert "Workflow Run Crate profile" in issue


def test_large_files_are_described_not_copied(tmp_path):
    (tmp_path / "card.json").write_text("{}")
    (tmp_path / "big.parquet").write_bytes(b"x" * 5000)
    provenance.write(
        tmp_path / "crate.zip",
        name="big",
        snakefile=REPO / "Snakefile",
        rule_files=[],
        config={},
        inputs={"model card": tmp_path / "card.json"},
        outputs={"predictions": tmp_path / "big.parquet"},
        mlflow_runs=[],
        max_copy_mb=0.001,
    )
    names = zipfile.ZipFile(tmp_path / "crate.zip").namelist()
    assert "outputs/big.parquet" not in names and "inputs/card.json" in names
    meta = json.loads(zipfile.ZipFile(tmp_path / "crate.zip").read("ro-crate-metadata.json"))
    big = next(e for e in meta["@graph"] if e["@id"] == "#outputs/big.parquet")
    assert big["sha256"] == sha256_file(tmp_path / "big.parquet") and big["contentSize"] == "5000"
    assert validate_rocrate(tmp_path / "crate.zip", tmp_path / "http-cache") == []
