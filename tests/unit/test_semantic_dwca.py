"""Darwin Core Archive of a semantic campaign: per sample and taxon the cover of the sample's classified
pixels (no count: pixels are not individuals), every predicted raster's sample an event, classes that
are not taxa left out, absences as 0 % cover."""

from __future__ import annotations

import pandas as pd
import pytest

from aquaflow.standards import dwca
from aquaflow.standards.taxonomy import Taxon, write_table
from aquaflow.tasks.objects import export_images, export_objects

from ..dwca_checks import meta_xml_errors, obis_problems, read_archive

CLASSES = ["sand", "zostera", "posidonia"]
# raster id, sample, pixels per class (valid pixels only: nodata is in none of them)
RASTERS = [
    ("r1", "T1", {"sand": 600, "zostera": 300, "posidonia": 100}),
    ("r2", "T1", {"sand": 1000, "zostera": 0, "posidonia": 0}),
    ("r3", "T2", {"sand": 0, "zostera": 0, "posidonia": 400}),
    ("r4", "T3", {"sand": 50, "zostera": 0, "posidonia": 0}),  # bare: an event, absences only
]
TAXA = [
    Taxon("sand", "", None, "", "", "not_a_taxon", "2026-01-01"),
    Taxon("zostera", "Zostera marina", 145795, "Species", "Plantae", "verified", "2026-01-01"),
    Taxon("posidonia", "Posidonia oceanica", 145794, "Species", "Plantae", "verified", "2026-01-01"),
]
SAMPLES = """eventID,eventDate,decimalLatitude,decimalLongitude,countryCode,sampleSizeValue,sampleSizeUnit
T1,2025-06-01,43.1,5.9,FR,2,m3
T2,2025-06-01,43.2,5.9,FR,,
T3,2025-06-02,43.3,5.9,FR,,
T4,2025-06-02,43.4,5.9,FR,,
"""
SETTINGS = {"task": "semantic", "sample_column": "transect", "default_sample": "camp"}


def predictions() -> pd.DataFrame:
    """Rows as aquaflow.engine.semantic.gather writes them (the columns the export reads)."""
    rows = [
        {
            "seq": i,
            "id": rid,
            "source": f"rasters/{rid}.tif",
            "transect": sample,
            **{f"pixels_{c}": n for c, n in px.items()},
            **{f"area_m2_{c}": n * 0.01 for c, n in px.items()},
            "model_id": "m" * 64,
        }
        for i, (rid, sample, px) in enumerate(RASTERS)
    ]
    return pd.DataFrame(rows)


def test_objects_are_the_classes_present_per_raster_and_images_their_classified_pixels():
    objs = export_objects(predictions(), SETTINGS)
    got = list(zip(objs["id"], objs["transect"], objs["top1_label"], objs["mask_area_px"], strict=True))
    assert got == [
        ("r1", "T1", "sand", 600.0),
        ("r1", "T1", "zostera", 300.0),
        ("r1", "T1", "posidonia", 100.0),
        ("r2", "T1", "sand", 1000.0),
        ("r3", "T2", "posidonia", 400.0),
        ("r4", "T3", "sand", 50.0),
    ]
    assert (objs["top1_prob"] == 1.0).all()
    images = export_images(predictions(), SETTINGS)
    assert list(images["sample"]) == ["T1", "T1", "T2", "T3"]
    assert list(images["area_px"]) == [1000.0, 1000.0, 400.0, 50.0]
    # `samples.column: id`: each raster its own sample, the id column once
    by_raster = export_objects(predictions(), {**SETTINGS, "sample_column": "id"})
    assert list(by_raster.columns).count("id") == 1 and list(by_raster["id"]) == list(objs["id"])
    assert list(export_images(predictions(), {**SETTINGS, "sample_column": "id"})["sample"]) == [
        "r1",
        "r2",
        "r3",
        "r4",
    ]
    # without the sample column every raster belongs to the campaign's sample
    alone = export_objects(predictions().drop(columns="transect"), SETTINGS)
    assert set(alone["transect"]) == {"camp"}


@pytest.mark.parametrize("absences", [False, True])
def test_dwca_cover_per_sample_and_taxon_and_no_count(tmp_path, absences):
    predictions().to_parquet(tmp_path / "predictions.parquet")
    (tmp_path / "samples.csv").write_text(SAMPLES)
    write_table(TAXA, tmp_path / "taxa.tsv")
    tables = dwca.export(
        predictions=tmp_path / "predictions.parquet",
        samples=tmp_path / "samples.csv",
        taxonomy=tmp_path / "taxa.tsv",
        out=tmp_path / "dwca.zip",
        report=tmp_path / "report.json",
        cfg={"eml": {"license": "CC-BY-4.0"}, "absences": absences},
        instrument="drone camera",
        sample_column="transect",
        default_sample="camp",
        package_id="seagrass_demo",
        card={"id": "m" * 64, "arch": "Unet", "backend": "smp", "classes": CLASSES},
        objects=SETTINGS,
        counts=tmp_path / "predictions.parquet",
    )
    assert meta_xml_errors(tmp_path / "dwca.zip") == []
    ev, occ, emof = read_archive(tmp_path / "dwca.zip")
    assert list(ev["eventID"]) == ["T1", "T2", "T3"]  # T4: no raster
    assert obis_problems(ev, occ, emof) == []
    present = occ[occ["occurrenceStatus"] == "present"]
    assert set(present["occurrenceID"]) == {"T1_P_145795", "T1_P_145794", "T2_P_145794"}
    assert present["identificationRemarks"].str.contains("semantic segmentation").all()
    named = emof.merge(occ[["occurrenceID", "scientificName", "occurrenceStatus"]], on="occurrenceID")
    # pixels are not individuals: no count, abundance or biovolume, even with T1's volume
    assert not emof["measurementTypeID"].isin([dwca.COUNT[1], dwca.ABUNDANCE[1], dwca.BIOVOLUME[1]]).any()
    cover = named[named["measurementTypeID"] == dwca.COVER[1]]
    got = {
        (e, n, s): float(v)
        for e, n, s, v in zip(
            cover["eventID"],
            cover["scientificName"],
            cover["occurrenceStatus"],
            cover["measurementValue"],
            strict=True,
        )
    }
    expect = {
        ("T1", "Zostera marina", "present"): 100 * 300 / 2000,  # r1 + r2: 2,000 classified pixels
        ("T1", "Posidonia oceanica", "present"): 100 * 100 / 2000,
        ("T2", "Posidonia oceanica", "present"): 100.0,
    }
    if absences:  # the model's taxa a sample did not show: 0 % cover
        expect |= {
            ("T2", "Zostera marina", "absent"): 0.0,
            ("T3", "Zostera marina", "absent"): 0.0,
            ("T3", "Posidonia oceanica", "absent"): 0.0,
        }
    assert got == pytest.approx(expect, rel=1e-6)
    assert set(cover["measurementUnitID"]) == {dwca.UNITS["percent"][1]}
    absent = cover.loc[cover["occurrenceStatus"] == "absent", "measurementMethod"]
    assert set(absent) == ({"no pixel of this class in the sample"} if absences else set())
    (method,) = cover.loc[
        (cover["eventID"] == "T1") & (cover["scientificName"] == "Zostera marina"), "measurementMethod"
    ]
    assert method.startswith("pixels classified as this class in the sample's 1 raster(s) (300) / ")
    assert "(2000, nodata excluded)" in method
    assert tables.report["excluded_not_a_taxon"] == ["sand"]
    assert dwca.check(tables) == []
