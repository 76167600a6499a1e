"""Standard exports of detection campaigns end to end, for detect, segment and obb: a given model
(an untrained YOLO built from its yaml, its head set by hand to find small boxes, saved with a
model card; nothing is trained) predicts a campaign of four images in two samples; the workflow
writes the EcoTaxa TSV + zip, the Darwin Core Archive and the Workflow Run RO-Crate, checked with
EcoTaxa's import rules, python-dwca-reader, the TDWG text XSD, pyobistools and roc-validator."""

from __future__ import annotations

import json
import zipfile

import cv2
import numpy as np
import pandas as pd
import pytest
import yaml
from rocrate.rocrate import ROCrate

from aquaflow.io import sha256_file
from aquaflow.standards import dwca, provenance
from aquaflow.standards.taxonomy import Taxon, write_table

from ..conftest import run_snakemake, validate_rocrate, write_workdir
from ..detect_models import seeded_head_model
from ..dwca_checks import meta_xml_errors, obis_problems, read_archive
from ..unit.test_ecotaxa import reimport

pytestmark = pytest.mark.workflow
TASKS = ["detect", "segment", "obb"]
CLASSES = ["madrepora", "desmophyllum"]
SAMPLE_OF = {"a.png": "S1", "b.png": "S1", "c.png": "S2", "d.png": "S2"}
PIXEL_MM = 0.5
SAMPLES = """eventID,eventDate,decimalLatitude,decimalLongitude,countryCode,sampleSizeValue,sampleSizeUnit
S1,2024-05-08T10:00:00Z,38.1,-0.4,ES,2,m3
S2,2024-05-09,38.2,-0.5,ES,,
"""


def usecase(task: str, model, data) -> dict:
    return {
        "task": task,
        "instrument": "ROV camera",
        "model": {"source": "path", "path": str(model)},
        "detection": {
            "imgsz": 64,
            "predict": {"conf": 0.1, "max_det": 3, "batch": 4, "device": "cpu"},
            "pixel_size": {"value": PIXEL_MM, "unit": "mm"},
            "overlays": 1,
        },
        "campaigns": {
            "demo": {
                "inputs": [{"kind": "manifest", "path": str(data / "manifest.csv"), "column": "path"}],
                "samples": {"path": str(data / "samples.csv")},
            }
        },
        "export": {"dwca": {"taxonomy": str(data / "taxa.tsv"), "eml": {"title": f"corals {task}"}}},
    }


# what the tests read: the campaign's outputs and its exports (the MLflow inference run and the
# campaigns' summary table, tested elsewhere for detectors, are left out: fewer jobs)
TARGETS = [
    f"results/coral_{task}/campaigns/demo/{name}"
    for task in TASKS
    for name in (
        "predictions.parquet",
        "counts.parquet",
        f"export/ecotaxa_coral_{task}_demo.tsv",
        f"export/ecotaxa_coral_{task}_demo.zip",
        f"export/dwca_coral_{task}_demo.zip",
        f"export/rocrate_coral_{task}_demo.zip",
    )
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detect_exports")
    data = tmp / "data"
    data.mkdir()
    rng = np.random.default_rng(4)
    for name in SAMPLE_OF:
        cv2.imwrite(str(data / name), rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    pd.DataFrame({"path": list(SAMPLE_OF), "sample_id": list(SAMPLE_OF.values())}).to_csv(
        data / "manifest.csv", index=False
    )
    (data / "samples.csv").write_text(SAMPLES)
    write_table(
        [
            Taxon("madrepora", "Madrepora oculata", 135209, "Species", "Animalia", "verified", "2026-01-01"),
            Taxon("desmophyllum", "Desmophyllum pertusum", 1245747, "Species", "Animalia", "verified"),
        ],
        data / "taxa.tsv",
    )
    ucs = {}
    for task in TASKS:
        seeded_head_model(tmp / "models" / task, task, CLASSES)
        ucs[f"coral_{task}"] = usecase(task, tmp / "models" / task, data)
    wd = write_workdir(tmp / "wd", ucs)
    run_snakemake(wd, *TARGETS, "--set-scatter", "infer=1")
    return wd


def campaign(wd, task):
    return wd / "results" / f"coral_{task}" / "campaigns" / "demo"


def export(wd, task, kind, ext):
    return campaign(wd, task) / "export" / f"{kind}_coral_{task}_demo.{ext}"


def expected_boxes(pred: pd.DataFrame) -> list[tuple[int, int, int, int]]:
    """The crop of each detection: its box widened to whole pixels and clipped to the image."""
    out = []
    for r in pred.itertuples(index=False):
        x0 = min(max(int(np.floor(r.x)), 0), r.image_width - 1)
        y0 = min(max(int(np.floor(r.y)), 0), r.image_height - 1)
        x1 = min(max(int(np.ceil(r.x + r.w)), x0 + 1), r.image_width)
        y1 = min(max(int(np.ceil(r.y + r.h)), y0 + 1), r.image_height)
        out.append((x0, y0, x1 - x0, y1 - y0))
    return out


@pytest.mark.parametrize("task", TASKS)
def test_ecotaxa_one_object_per_detection_with_its_crop(run, task):
    pred = pd.read_parquet(campaign(run, task) / "predictions.parquet")
    assert len(pred) > 0 and set(pred["class"]) <= set(CLASSES)
    assert task != "detect" or set(pred["class"]) == set(CLASSES)  # both classes (seeded head)
    assert (pred["w"] < pred["image_width"] - 1).all()  # boxes, not whole images: real crops
    tsv = export(run, task, "ecotaxa", "tsv")
    back = reimport(tsv)  # EcoTaxa's reading rules: types, prefixes, mandatory ids
    ids = [
        f"{s}_{q + 1:06d}_{k + 1:03d}"
        for s, q, k in zip(pred["sample_id"], pred["seq"], pred["det"], strict=True)
    ]
    assert list(back["object_id"]) == ids and back["object_id"].is_unique
    assert list(back["sample_id"]) == list(pred["sample_id"])
    assert list(back["object_annotation_category"]) == list(pred["class"])
    assert back["object_score_top1"].astype(float).to_numpy() == pytest.approx(pred["score"], abs=1e-6)
    area_mm2 = (pred["w"] * pred["h"] * PIXEL_MM**2).to_numpy(float)
    assert back["object_box_area_mm2"].astype(float).to_numpy() == pytest.approx(area_mm2, rel=1e-4, abs=1e-6)
    if task == "segment":
        masks = (pred["area_px"] * PIXEL_MM**2).to_numpy(float)
        assert back["object_mask_area_mm2"].astype(float).to_numpy() == pytest.approx(masks, abs=1e-6)
    if task == "obb":
        angles = np.degrees(pred["obb_angle"].to_numpy(float))
        assert back["object_angle_deg"].astype(float).to_numpy() == pytest.approx(angles, abs=1e-3)
    with zipfile.ZipFile(export(run, task, "ecotaxa", "zip")) as zf:
        assert sorted(zf.namelist()) == sorted([tsv.name, *back["img_file_name"]])
        for name, src, (x, y, w, h) in zip(
            back["img_file_name"], pred["source"], expected_boxes(pred), strict=True
        ):
            crop = cv2.imdecode(np.frombuffer(zf.read(name), np.uint8), cv2.IMREAD_COLOR)
            assert np.array_equal(crop, cv2.imread(src, cv2.IMREAD_COLOR)[y : y + h, x : x + w])


@pytest.mark.parametrize("task", TASKS)
def test_dwca_counts_per_sample_and_taxon(run, task):
    c = campaign(run, task)
    pred = pd.read_parquet(c / "predictions.parquet")
    counts = pd.read_parquet(c / "counts.parquet")
    archive = export(run, task, "dwca", "zip")
    assert meta_xml_errors(archive) == []
    ev, occ, emof = read_archive(archive)
    assert list(ev["eventID"]) == ["S1", "S2"]
    assert obis_problems(ev, occ, emof) == []
    named = emof.merge(
        occ[["eventID", "occurrenceID", "verbatimIdentification"]], on=["eventID", "occurrenceID"]
    )
    count = named[named["measurementTypeID"] == dwca.COUNT[1]]
    got = {
        (e, lb): int(v)
        for e, lb, v in zip(
            count["eventID"], count["verbatimIdentification"], count["measurementValue"], strict=True
        )
    }
    assert got == {k: int(v) for k, v in pred.groupby(["sample_id", "class"]).size().items()}
    cover = named[named["measurementTypeID"] == dwca.COVER[1]]
    if task != "segment":
        assert cover.empty
        return
    imaged = (counts["image_width"] * counts["image_height"]).groupby(counts["sample_id"]).sum()
    masks = pred.groupby(["sample_id", "class"])["area_px"].sum()
    expect = {(e, lb): 100 * v / imaged[e] for (e, lb), v in masks.items()}
    got_cover = {
        (e, lb): float(v)
        for e, lb, v in zip(
            cover["eventID"], cover["verbatimIdentification"], cover["measurementValue"], strict=True
        )
    }
    assert got_cover == pytest.approx(expect, rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("task", TASKS)
def test_rocrate_holds_the_detection_outputs(run, task, tmp_path):
    c = campaign(run, task)
    crate_zip = export(run, task, "rocrate", "zip")
    with zipfile.ZipFile(crate_zip) as zf:
        zf.extractall(tmp_path / "crate")
    crate = ROCrate(tmp_path / "crate")
    actions = [e for e in crate.get_entities() if e.type == "CreateAction"]
    (action,) = [a for a in actions if a["instrument"].id == crate.mainEntity.id]  # the run's
    assert len(actions) > 1  # and one per executed job (Provenance Run Crate)
    assert action["description"] == provenance.DESCRIPTIONS[task]
    results = {e.id: e["sha256"] for e in action["result"]}
    for path in (
        c / "predictions.parquet",
        c / "counts.parquet",
        c / "detections.json",
        c / "coco_images.json",
        export(run, task, "ecotaxa", "tsv"),
        export(run, task, "dwca", "zip"),
    ):
        assert results[f"outputs/{path.name}"] == sha256_file(path), path.name
    objects = {e.id for e in action["object"]}
    assert {"inputs/model_card.json", "inputs/samples.csv", "inputs/taxa.tsv"} <= objects
    assert validate_rocrate(crate_zip, tmp_path / "http-cache") == []


def test_editing_eml_reruns_only_the_exports(run):
    path = run / "config/usecases/coral_segment.yaml"
    uc = yaml.safe_load(path.read_text())
    uc["export"]["dwca"]["eml"]["title"] = "A new title"
    path.write_text(yaml.safe_dump(uc, sort_keys=False))
    proc = run_snakemake(run, *TARGETS, "-n", "--quiet", "rules", "--set-scatter", "infer=1")
    jobs = {line.split()[0] for line in proc.stdout.splitlines() if line.strip() and "_" in line.split()[0]}
    assert jobs & {"export_dwca", "export_rocrate"} == {"export_dwca", "export_rocrate"}, proc.stdout
    assert not jobs & {"detect_shard", "detect_gather", "export_ecotaxa", "export_ecotaxa_bundle"}, (
        proc.stdout
    )
    card = json.loads((run / "results/coral_segment/model/model_card.json").read_text())
    assert card["task"] == "segment" and card["classes"] == CLASSES
