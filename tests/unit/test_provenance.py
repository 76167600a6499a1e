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
    assert {"python", "snakemake"} <= set(soft) and "aquaflow" not in soft  # aquaflow: the workflow
    assert crate.mainEntity["version"] and all(
        e.id.startswith("https://") for e in crate.mainEntity["softwareRequirements"]
    )
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


def test_recommended_properties_of_the_run_crate(tmp_path):
    """What roc-validator RECOMMENDS for workflow-run-crate-0.5: encodingFormat on every file, a
    README about the crate, agent/author/publisher/licence entities, no singleton arrays; all that
    is left is the main workflow's id, relative in a crate read from a local file."""
    (tmp_path / "card.json").write_text(json.dumps({"id": "ab" * 32}))
    (tmp_path / "table.tsv").write_text("a\tb\n")
    cfg = {
        "source": {"license": "CC-BY-4.0"},
        "export": {
            "dwca": {"eml": {"creator": "A. Person", "organization": "An Institute", "email": "a@b.org"}},
            "rocrate": {"organization_url": "https://institute.example.org/"},
        },
    }
    provenance.write(
        tmp_path / "crate.zip",
        name="x",
        snakefile=REPO / "Snakefile",
        rule_files=sorted((REPO / "workflow").glob("*.smk"))[:2],
        config=cfg,
        inputs={"model card": tmp_path / "card.json"},
        outputs={"table": tmp_path / "table.tsv"},
        mlflow_runs=["r1"],
        software={"python": "3.11.7", "numpy": "2.1.3"},
        workflow_url="https://git.example.org/aquaflow/tree/v1",
    )
    with zipfile.ZipFile(tmp_path / "crate.zip") as zf:
        zf.extractall(tmp_path / "crate")
        meta = json.loads(zf.read("ro-crate-metadata.json"))
        assert "# x" in zf.read("README.md").decode()
    graph = {e["@id"]: e for e in meta["@graph"]}
    formats = {i: e.get("encodingFormat") for i, e in graph.items() if "File" in e["@type"]}
    assert formats["outputs/table.tsv"] == "text/tab-separated-values"
    assert formats["inputs/card.json"] == "application/json" and formats["README.md"] == "text/markdown"
    assert all(formats.values())
    root = graph["./"]
    assert graph[root["license"]["@id"]]["name"] == "CC-BY-4.0"
    assert root["license"]["@id"] == "https://spdx.org/licenses/CC-BY-4.0"
    assert graph[root["author"]["@id"]]["@type"] == "Person"
    assert graph[root["publisher"]["@id"]] == {
        "@id": "#organization",
        "@type": "Organization",
        "name": "An Institute",
        "url": "https://institute.example.org/",
    }
    action = graph[root["mentions"]["@id"]]  # one action: a single value, not a list
    assert action["identifier"] == "mlflow-run:r1" and action["agent"] == root["author"]
    assert graph["https://pypi.org/project/numpy/2.1.3/"]["url"] == "https://pypi.org/project/numpy/"
    notes = validate_rocrate(tmp_path / "crate.zip", tmp_path / "http-cache", severity="RECOMMENDED")
    assert notes == ["RECOMMENDED: The SoftwareApplication id SHOULD be an absolute URI"] * 2


def _record(rule, inputs, start, job="h1", checksums=None, end=None):
    """A record as Snakemake 9 writes it to .snakemake/metadata (the fields job_records reads):
    the outputs of one job share job_hash and endtime; their starttimes differ a little."""
    return {
        "rule": rule,
        "input": inputs,
        "params": [f"{{'rule': '{rule}'}}"],
        "job_hash": job,
        "starttime": start,
        "endtime": end or start + 5,
        "incomplete": False,
        "input_checksums": checksums or {},
    }


def test_provenance_run_crate_from_job_records(tmp_path, monkeypatch):
    """One CreateAction per executed job upstream of the crate's files (not of other targets), the
    rules as the workflow's tools and steps: passes provenance-run-crate-0.5 at REQUIRED level."""
    import base64

    monkeypatch.chdir(tmp_path)
    meta = tmp_path / ".snakemake/metadata"
    meta.mkdir(parents=True)
    records = {
        "model.bin": _record("train", ["data.csv"], 100.0),
        "shard1.parquet": _record("infer_shard", ["model.bin"], 200.0, "s1"),
        "shard2.parquet": _record("infer_shard", ["model.bin"], 201.0, "s2"),
        "predictions.parquet": _record(
            "infer_gather", ["shard1.parquet", "shard2.parquet"], 300.0, "g", {"shard1.parquet": "ab" * 32}
        ),
        "summary.json": _record(
            "infer_gather", ["shard1.parquet", "shard2.parquet"], 300.0004, "g", end=305.0
        ),
        "other.txt": _record("unrelated", [], 50.0, "u"),
    }
    for path, rec in records.items():
        (meta / base64.urlsafe_b64encode(path.encode()).decode()).write_text(json.dumps(rec))
        (tmp_path / path).write_text(path)
    (meta / "garbage").write_text("not json")
    jobs = provenance.job_records(meta, ["predictions.parquet"])
    assert [(j.rule, j.outputs) for j in jobs] == [
        ("train", ("model.bin",)),
        ("infer_shard", ("shard1.parquet",)),
        ("infer_shard", ("shard2.parquet",)),
        ("infer_gather", ("predictions.parquet", "summary.json")),
    ]
    assert provenance.job_records(tmp_path / "absent", ["predictions.parquet"]) == []
    provenance.write(
        tmp_path / "crate.zip",
        name="x",
        snakefile=REPO / "Snakefile",
        rule_files=[],
        config={},
        inputs={"model": tmp_path / "model.bin"},
        outputs={"predictions": tmp_path / "predictions.parquet"},
        mlflow_runs=[],
        jobs=jobs,
        workflow_url="https://git.example.org/aquaflow/tree/v1",
    )
    meta_json = json.loads(zipfile.ZipFile(tmp_path / "crate.zip").read("ro-crate-metadata.json"))
    graph = {e["@id"]: e for e in meta_json["@graph"]}
    runs = [e for e in graph.values() if e["@type"] == "CreateAction" and e["@id"].startswith("#job-")]
    assert [r["name"] for r in runs] == [
        "rule train",
        "rule infer_shard",
        "rule infer_shard",
        "rule infer_gather",
    ]
    gather = runs[-1]
    assert {r["@id"] for r in gather["result"]} == {"outputs/predictions.parquet", "#path:summary.json"}
    assert graph["#path:shard1.parquet"]["sha256"] == "ab" * 32  # Snakemake's recorded checksum
    assert (
        gather["startTime"] == "1970-01-01T00:05:00+00:00"
        and gather["endTime"] == "1970-01-01T00:05:05+00:00"  # latest of the records
    )
    wf = graph["workflow/Snakefile"]
    assert "HowTo" in wf["@type"] and len(wf["hasPart"]) == len(wf["step"]) == 3
    assert provenance.PROFILES["provenance"] in {c["@id"] for c in graph["./"]["conformsTo"]}
    for profile in ("provenance-run-crate-0.5", "workflow-run-crate-0.5"):
        assert validate_rocrate(tmp_path / "crate.zip", tmp_path / "http-cache", profile) == []
