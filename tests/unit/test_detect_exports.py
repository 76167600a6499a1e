"""EcoTaxa and Darwin Core exports of detection campaigns (detect, segment, obb) from hand-written
detection tables of known truth: object ids, features in px and mm, crops, counts and cover per
sample and taxon; checked with EcoTaxa's import rules, python-dwca-reader, the TDWG text XSD and
pyobistools."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from aquaflow.engine import staging
from aquaflow.standards import dwca, ecotaxa
from aquaflow.standards.taxonomy import Taxon, write_table
from aquaflow.tasks.objects import export_objects

from ..dwca_checks import meta_xml_errors, obis_problems, read_archive
from .test_ecotaxa import reimport

TASKS = ["detect", "segment", "obb"]
W, H = 96, 64  # every image
PIXEL = {"value": 50, "unit": "um"}  # 0.05 mm
MM = 0.05
# image seq -> sample; seq 2 (S2) and seq 3 (S3) have no detection
IMAGES = {0: "S1", 1: "S2", 2: "S2", 3: "S3"}
# seq, det, class, score, box x y w h, mask pixels, obb w h angle (rad)
DETECTIONS = [
    (0, 0, "madrepora", 0.9, (10.4, 5.6, 20.2, 10.1), 150, (18.0, 8.0, math.pi / 6)),
    (0, 1, "desmophyllum", 0.5, (50.0, 30.0, 40.0, 30.0), 900, (36.0, 20.0, 0.0)),
    (0, 2, "madrepora", 0.3, (0.0, 0.0, 5.0, 5.0), 20, (5.0, 5.0, 0.0)),
    (1, 0, "madrepora", 0.7, (90.5, 60.2, 10.0, 10.0), 60, (8.0, 5.0, math.pi / 2)),
]
IDS = ["S1_000001_001", "S1_000001_002", "S1_000001_003", "S2_000002_001"]
CROPS = [(10, 5, 21, 11), (50, 30, 40, 30), (0, 0, 5, 5), (90, 60, 6, 4)]  # x, y, w, h (clipped)
TAXA = [
    Taxon("madrepora", "Madrepora oculata", 135209, "Species", "Animalia", "verified", "2026-01-01"),
    Taxon("desmophyllum", "Desmophyllum pertusum", 1245747, "Species", "Animalia", "verified", "2026-01-01"),
]
SAMPLES = """eventID,eventDate,decimalLatitude,decimalLongitude,countryCode,sampleSizeValue,sampleSizeUnit
S1,2024-05-08T10:00:00Z,38.1,-0.4,ES,2,m3
S2,2024-05-09,38.2,-0.5,ES,,
S3,2024-05-10,38.3,-0.6,ES,,
S4,2024-05-11,38.4,-0.7,ES,,
"""


def images(folder: Path) -> dict[int, Path]:
    """Four random PNGs of H x W (their pixels are what the crops must hold)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    out = {}
    for seq in IMAGES:
        out[seq] = folder / f"frame_{seq}.png"
        cv2.imwrite(str(out[seq]), rng.integers(0, 255, (H, W, 3), dtype=np.uint8))
    return out


def detection_table(task: str, files: dict[int, Path], pixel_size: dict | None = PIXEL) -> pd.DataFrame:
    """A detection table as aquaflow.tasks.detect.outputs writes it (the columns of one task)."""
    rows = []
    for seq, det, cls, score, (x, y, w, h), mask, (ow, oh, angle) in DETECTIONS:
        row = {
            "seq": seq,
            "id": f"{seq:064x}",
            "source": str(files[seq]),
            "sample_id": IMAGES[seq],
            "det": det,
            "class": cls,
            "class_id": ["madrepora", "desmophyllum"].index(cls),
            "score": score,
            "x": x,
            "y": y,
            "w": w,
            "h": h,
            "area_px": {"detect": w * h, "segment": float(mask), "obb": ow * oh}[task],
            "image_width": W,
            "image_height": H,
        }
        if pixel_size:
            row["area_um2"] = row["area_px"] * 50 * 50
        if task == "obb":
            row |= {"obb_cx": x + w / 2, "obb_cy": y + h / 2, "obb_w": ow, "obb_h": oh, "obb_angle": angle}
            row["obb_corners"] = [0.0] * 8
        if task == "segment":
            row["rle"] = "not decoded by the exports"
        rows.append(row | {"model_id": "m" * 64, "run_id": "r" * 16})
    return pd.DataFrame(rows)


def counts_table(files: dict[int, Path]) -> pd.DataFrame:
    n = pd.Series([d[0] for d in DETECTIONS]).value_counts()
    return pd.DataFrame(
        {
            "seq": list(IMAGES),
            "id": [f"{s:064x}" for s in IMAGES],
            "source": [str(files[s]) for s in IMAGES],
            "sample_id": list(IMAGES.values()),
            "image_width": W,
            "image_height": H,
            "n": [int(n.get(s, 0)) for s in IMAGES],
        }
    )


def objects_settings(task: str, pixel_size: dict | None = PIXEL) -> dict:
    return {"task": task, "sample_column": "sample_id", "default_sample": "camp", "pixel_size": pixel_size}


@pytest.mark.parametrize("task", TASKS)
def test_objects_ids_crops_and_features(tmp_path, task):
    files = images(tmp_path / "img")
    obj = export_objects(detection_table(task, files), objects_settings(task))
    assert list(obj["object_name"]) == IDS
    assert list(obj["sample_id"]) == ["S1", "S1", "S1", "S2"]
    assert list(obj["top1_label"]) == [d[2] for d in DETECTIONS]
    assert list(obj["top1_prob"]) == [d[3] for d in DETECTIONS]
    assert [tuple(r) for r in obj[["crop_x", "crop_y", "crop_w", "crop_h"]].to_numpy()] == CROPS
    assert list(obj["box_area_px"]) == pytest.approx([204.02, 1200.0, 25.0, 100.0])
    assert list(obj["width_mm"]) == pytest.approx([20.2 * MM, 40 * MM, 5 * MM, 10 * MM])
    assert list(obj["box_area_mm2"]) == pytest.approx([204.02 * MM**2, 1200 * MM**2, 25 * MM**2, 100 * MM**2])
    assert (obj["process_pixel_size_mm"] == MM).all()
    assert ("mask_area_mm2" in obj) == (task == "segment") and ("angle_deg" in obj) == (task == "obb")
    if task == "segment":  # 150 px at 0.05 mm = 0.375 mm²
        assert list(obj["mask_area_mm2"]) == pytest.approx([0.375, 2.25, 0.05, 0.15])
    if task == "obb":
        assert list(obj["angle_deg"]) == pytest.approx([30.0, 0.0, 0.0, 90.0])
        assert list(obj["obb_area_mm2"]) == pytest.approx([144 * MM**2, 720 * MM**2, 25 * MM**2, 40 * MM**2])
    # no pixel size: pixels only
    plain = export_objects(detection_table(task, files, None), objects_settings(task, None))
    assert not [c for c in plain.columns if c.endswith(("_mm", "_mm2"))]
    assert "process_pixel_size_mm" not in plain


def test_input_crops_move_the_boxes(tmp_path):
    """A detection in an input row that is a crop of a larger file is cut from that file's pixels."""
    files = images(tmp_path / "img")
    det = detection_table("detect", files).assign(crop_x=7, crop_y=3, crop_w=80, crop_h=50)
    obj = export_objects(det, objects_settings("detect"))
    assert list(obj["crop_x"]) == [x + 7 for x, _, _, _ in CROPS]
    assert list(obj["crop_y"]) == [y + 3 for _, y, _, _ in CROPS]


def ecotaxa_settings(task: str) -> dict:
    return {
        "enabled": True,
        "categories": {},
        "class_scores": [],
        "images": True,
        "convention": "generic",
        "top_k": 5,
        "instrument": "ROV camera",
        "metadata": {"cruise": "C1"},
        "default_sample_id": "camp",
        "objects": objects_settings(task),
    }


@pytest.mark.parametrize("task", TASKS)
def test_ecotaxa_tsv_and_zip_one_object_per_detection(tmp_path, task):
    files = images(tmp_path / "img")
    det = detection_table(task, files)
    det.to_parquet(tmp_path / "predictions.parquet")
    tsv = tmp_path / "ecotaxa_x.tsv"
    assert ecotaxa.export(tmp_path / "predictions.parquet", tsv, ecotaxa_settings(task)) == 4
    back = reimport(tsv)  # EcoTaxa's own reading rules (types, prefixes, ids)
    _, types = ecotaxa.read_tsv(tsv)
    typed = dict(zip(back.columns, types, strict=True))
    assert list(back["object_id"]) == IDS
    assert list(back["img_file_name"]) == [f"images/{i}.png" for i in IDS]
    assert list(back["object_annotation_category"]) == [d[2] for d in DETECTIONS]
    assert list(back["sample_id"]) == list(back["acq_id"]) == ["S1", "S1", "S1", "S2"]
    assert (back["sample_cruise"] == "C1").all() and (back["acq_instrument"] == "ROV camera").all()
    assert back["object_score_top1"].astype(float).tolist() == [d[3] for d in DETECTIONS]
    for col in (
        "object_bx_px",
        "object_width_px",
        "object_box_area_px",
        "object_width_mm",
        "object_box_area_mm2",
    ):
        assert typed[col] == "[f]", col
    assert back["object_height_mm"].astype(float).tolist() == pytest.approx(
        [10.1 * MM, 30 * MM, 5 * MM, 10 * MM]
    )
    if task == "segment":
        assert back["object_mask_area_mm2"].astype(float).tolist() == pytest.approx([0.375, 2.25, 0.05, 0.15])
    if task == "obb":
        assert back["object_angle_deg"].astype(float).tolist() == pytest.approx([30.0, 0.0, 0.0, 90.0])
    assert not [c for c in back.columns if "rle" in c or "corners" in c or c.startswith("object_crop")]
    zip_path = tmp_path / "ecotaxa_x.zip"
    objects = export_objects(det, objects_settings(task))
    ecotaxa.write_bundle(objects, tsv, zip_path)
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == sorted([tsv.name] + [f"images/{i}.png" for i in IDS])
        for oid, (x, y, w, h), seq in zip(IDS, CROPS, [d[0] for d in DETECTIONS], strict=True):
            crop = cv2.imdecode(np.frombuffer(zf.read(f"images/{oid}.png"), np.uint8), cv2.IMREAD_COLOR)
            source = cv2.imread(str(files[seq]), cv2.IMREAD_COLOR)
            assert crop.shape == (h, w, 3)
            assert np.array_equal(crop, source[y : y + h, x : x + w])


def test_ecotaxa_crops_from_staged_bundles(tmp_path):
    """Without a shared file system the crops come from the staged shard bundle, not the files."""
    files = images(tmp_path / "img")
    det = detection_table("segment", files)
    inputs = pd.DataFrame({"seq": list(IMAGES), "source": [str(files[s]) for s in IMAGES]})
    inputs.to_parquet(tmp_path / "inputs.parquet")
    staging.stage(tmp_path / "inputs.parquet", {"1-of-1": tmp_path / "1-of-1.zip"})
    truth = {s: cv2.imread(str(p), cv2.IMREAD_COLOR) for s, p in files.items()}
    for p in files.values():
        p.unlink()
    det.to_parquet(tmp_path / "predictions.parquet")
    tsv = tmp_path / "ecotaxa_x.tsv"
    ecotaxa.export(tmp_path / "predictions.parquet", tsv, ecotaxa_settings("segment"))
    objects = export_objects(det, objects_settings("segment"))
    read = staging.source_reader(objects, [tmp_path / "1-of-1.zip"])
    ecotaxa.write_bundle(objects, tsv, tmp_path / "x.zip", read)
    with zipfile.ZipFile(tmp_path / "x.zip") as zf:
        x, y, w, h = CROPS[1]
        crop = cv2.imdecode(np.frombuffer(zf.read(f"images/{IDS[1]}.png"), np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(crop, truth[0][y : y + h, x : x + w])


def write_inputs(tmp_path: Path, task: str) -> dict:
    files = images(tmp_path / "img")
    detection_table(task, files).to_parquet(tmp_path / "predictions.parquet")
    counts_table(files).to_parquet(tmp_path / "counts.parquet")
    (tmp_path / "samples.csv").write_text(SAMPLES)
    write_table(TAXA, tmp_path / "taxa.tsv")
    return {
        "predictions": tmp_path / "predictions.parquet",
        "samples": tmp_path / "samples.csv",
        "taxonomy": tmp_path / "taxa.tsv",
        "out": tmp_path / "dwca.zip",
        "report": tmp_path / "report.json",
        "cfg": {"eml": {"license": "CC-BY-4.0"}},
        "instrument": "ROV camera",
        "sample_column": "sample_id",
        "default_sample": "camp",
        "package_id": "coral_demo",
        "card": {"id": "m" * 64, "arch": "yolo11n.yaml", "backend": "ultralytics"},
        "objects": objects_settings(task),
        "counts": tmp_path / "counts.parquet",
    }


@pytest.mark.parametrize("task", TASKS)
def test_dwca_counts_and_cover_per_sample_and_taxon(tmp_path, task):
    args = write_inputs(tmp_path, task)
    tables = dwca.export(**args)
    assert meta_xml_errors(args["out"]) == []
    ev, occ, emof = read_archive(args["out"])
    # S3 has an image without detections: an event with no occurrence; S4 has no image at all
    assert list(ev["eventID"]) == ["S1", "S2", "S3"] == list(tables.event["eventID"])
    assert obis_problems(ev, occ, emof) == []
    named = emof.merge(occ[["eventID", "occurrenceID", "scientificName"]], on=["eventID", "occurrenceID"])
    count = named[named["measurementTypeID"] == dwca.COUNT[1]]
    got = {
        (e, n): int(v)
        for e, n, v in zip(count["eventID"], count["scientificName"], count["measurementValue"], strict=True)
    }
    assert got == {
        ("S1", "Madrepora oculata"): 2,
        ("S1", "Desmophyllum pertusum"): 1,
        ("S2", "Madrepora oculata"): 1,
    }
    assert set(occ["occurrenceID"]) == {"S1_P_135209", "S1_P_1245747", "S2_P_135209"}
    assert occ["identificationRemarks"].str.contains("detection by an object detector").all()
    abundance = named[named["measurementTypeID"] == dwca.ABUNDANCE[1]]
    assert dict(
        zip(abundance["scientificName"], abundance["measurementValue"].astype(float), strict=True)
    ) == {
        "Madrepora oculata": 1.0,  # 2 detections in 2 m³
        "Desmophyllum pertusum": 0.5,
    }
    assert not (emof["measurementTypeID"] == dwca.BIOVOLUME[1]).any()  # no area column asked for
    cover = named[named["measurementTypeID"] == dwca.COVER[1]]
    if task != "segment":
        assert cover.empty
        return
    # mask pixels / pixels of every image of the sample (S1: one image, S2: two) in percent
    expect = {
        ("S1", "Madrepora oculata"): 100 * (150 + 20) / (W * H),
        ("S1", "Desmophyllum pertusum"): 100 * 900 / (W * H),
        ("S2", "Madrepora oculata"): 100 * 60 / (2 * W * H),
    }
    got_cover = {
        (e, n): float(v)
        for e, n, v in zip(cover["eventID"], cover["scientificName"], cover["measurementValue"], strict=True)
    }
    assert got_cover == pytest.approx(expect, rel=1e-5)
    assert set(cover["measurementUnitID"]) == {dwca.UNITS["percent"][1]}
    assert dwca.check(tables) == []


@pytest.mark.parametrize("task", TASKS)
def test_campaign_without_detections(tmp_path, task):
    """No detection at all: an EcoTaxa table with its header and no object; the archive has the
    imaged samples as events and no occurrence."""
    args = write_inputs(tmp_path, task)
    empty = pd.read_parquet(args["predictions"]).iloc[0:0]
    empty.to_parquet(args["predictions"])
    tsv = tmp_path / "ecotaxa_x.tsv"
    assert ecotaxa.export(args["predictions"], tsv, ecotaxa_settings(task)) == 0
    data, _ = ecotaxa.read_tsv(tsv)
    assert len(data) == 0 and {"object_id", "img_file_name", "object_box_area_px"} <= set(data.columns)
    tables = dwca.export(**args)
    assert list(tables.event["eventID"]) == ["S1", "S2", "S3"] and tables.occurrence.empty
