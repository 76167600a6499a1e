"""Darwin Core Archive: built from small tables, checked with python-dwca-reader, the TDWG text XSD,
pyobistools (OBIS QC) and our own checks."""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dwca.read import DwCAReader
from lxml import etree
from pyobistools.validation.check_eventids import check_eventids, check_extension_eventids
from pyobistools.validation.check_fields import check_fields
from pyobistools.validation.check_measurementids import check_measurementids
from pyobistools.validation.check_occurrence_core_and_extension import check_occurrence_core_and_extension

from aquaflow.standards import dwca
from aquaflow.standards.taxonomy import Taxon, TaxonomyError, write_table

XSD = Path(__file__).resolve().parents[1] / "data" / "xsd" / "tdwg_dwc_text.xsd"
PIXEL_MM = 0.0106
SAMPLES = (
    "eventID,eventDate,decimalLatitude,decimalLongitude,countryCode,"
    "minimumDepthInMeters,maximumDepthInMeters,sampleSizeValue,sampleSizeUnit\n"
    """S1,2024-05-08T10:00:00Z,51.2,2.9,BE,0,3,5,mL
S2,2024-05-09,51.3,2.8,BE,0,3,2,L
S3,2024-05-10/2024-05-11,51.4,2.7,BE,0,3,,
"""
)
TAXA = [
    Taxon("Acartia", "Acartia", 104108, "Genus", "Animalia", "verified", "2026-01-01"),
    Taxon("Acartia_juv", "Acartia", 104108, "Genus", "Animalia", "verified", "2026-01-01"),
    Taxon("Noctiluca", "Noctiluca", None, "Genus", "Chromista", "unverified"),
    Taxon("detritus", "", None, "", "", "not_a_taxon"),
]


def predictions() -> pd.DataFrame:
    """30 objects in S1, S2, S3 (S3 has no volume); labels incl. a non-taxon and an unverified one."""
    rng = np.random.default_rng(0)
    labels = ["Acartia"] * 10 + ["Acartia_juv"] * 4 + ["Noctiluca"] * 6 + ["detritus"] * 10
    samples = ["S1", "S2", "S3"] * 10
    return pd.DataFrame(
        {
            "seq": range(30),
            "id": [f"{i:064x}" for i in range(30)],
            "source": [f"img{i}.png" for i in range(30)],
            "top1_label": labels,
            "top1_prob": rng.uniform(0.3, 1.0, 30),
            "sample_id": samples,
            "area_px": rng.integers(500, 5000, 30),
            "process_particle_pixel_size_mm": PIXEL_MM,
            "expert": [""] * 28 + ["Acartia", "Acartia"],
            "model_id": "m" * 64,
            "run_id": "r" * 16,
        }
    )


@pytest.fixture
def archive(tmp_path):
    preds = predictions()
    preds.to_parquet(tmp_path / "predictions.parquet")
    (tmp_path / "samples.csv").write_text(SAMPLES)
    write_table(TAXA, tmp_path / "taxa.tsv")
    cfg = {
        "validated_column": "expert",
        "identified_by": "A. Expert",
        "unverified": "exclude",  # opts in to leaving the unverified Noctiluca out
        "eml": {"license": "CC-BY-4.0"},
    }
    tables = dwca.export(
        predictions=tmp_path / "predictions.parquet",
        samples=tmp_path / "samples.csv",
        taxonomy=tmp_path / "taxa.tsv",
        out=tmp_path / "dwca.zip",
        report=tmp_path / "report.json",
        cfg=cfg,
        instrument="FlowCam",
        sample_column="sample_id",
        default_sample="",
        package_id="test_demo",
        card={"id": "m" * 64, "arch": "lcnet_050", "mlflow": {"run_id": "abc"}},
    )
    return tmp_path, preds, tables


def test_roundtrip_with_python_dwca_reader(archive):
    tmp, _, tables = archive
    with DwCAReader(str(tmp / "dwca.zip")) as dw:
        assert dw.descriptor.core.type == dwca.ROW_EVENT
        core_ids = [row.id for row in dw]
        assert len(core_ids) == len(tables.event) == 3
        ext = {e.type: e for e in dw.descriptor.extensions}
        assert set(ext) == {dwca.ROW_OCCURRENCE, dwca.ROW_EMOF}
        occ = dw.pd_read("occurrence.txt", dtype=str, keep_default_na=False)
        emof = dw.pd_read("extendedmeasurementorfact.txt", dtype=str, keep_default_na=False)
        assert len(occ) == len(tables.occurrence) and len(emof) == len(tables.emof)
        for row in dw:  # every extension row hangs off an existing core row
            for ext_row in row.extensions:
                assert ext_row.core_id == row.id
        n_ext = sum(len(row.extensions) for row in dw)
        assert n_ext == len(occ) + len(emof)
        assert set(occ["coreid"]) <= set(core_ids) and set(emof["coreid"]) <= set(core_ids)
        assert dw.metadata is not None  # eml.xml parsed


def test_meta_xml_validates_against_tdwg_text_xsd(archive):
    tmp, _, _ = archive
    schema = etree.XMLSchema(etree.parse(str(XSD), etree.XMLParser(no_network=True)))
    meta = zipfile.ZipFile(tmp / "dwca.zip").read("meta.xml")
    doc = etree.fromstring(meta)
    assert schema.validate(doc), schema.error_log
    # the schema bites: an extension without <coreid> is invalid
    ns = "{http://rs.tdwg.org/dwc/text/}"
    ext = doc.find(f"{ns}extension")
    ext.remove(ext.find(f"{ns}coreid"))
    assert not schema.validate(doc)


def test_obis_qc_with_pyobistools(archive):
    _, _, t = archive
    for result in (
        check_fields(t.event, analysis_type="event_core"),
        check_fields(t.occurrence, analysis_type="occurrence_extension"),
        check_eventids(t.event.assign(parentEventID="")),
        check_extension_eventids(t.event, t.occurrence),
        check_extension_eventids(t.event, t.emof),
        check_extension_eventids(t.occurrence, t.emof[t.emof["occurrenceID"] != ""], field="occurrenceID"),
        check_occurrence_core_and_extension(t.occurrence),
        check_measurementids(t.emof),
    ):
        assert result.empty, result.to_dict("records")


def test_counts_equal_predictions_per_sample_and_taxon(archive):
    _, preds, t = archive
    counts = t.emof[t.emof["measurementTypeID"] == dwca.COUNT[1]]
    got = counts.merge(t.occurrence, on=["eventID", "occurrenceID"])
    got = got.assign(n=got["measurementValue"].astype(int))
    got = got.groupby(["eventID", "scientificName", "identificationVerificationStatus"])["n"].sum()
    sel = preds[preds["top1_label"].isin(["Acartia", "Acartia_juv"]) | (preds["expert"] != "")].copy()
    sel["status"] = np.where(sel["expert"] != "", "ValidatedByHuman", "PredictedByMachine")
    expect = sel.assign(name="Acartia").groupby(["sample_id", "name", "status"]).size()
    assert got.to_dict() == expect.to_dict()
    # two labels mapping to one taxon give one occurrence per (event, taxon, status)
    assert t.occurrence["occurrenceID"].is_unique
    assert (t.occurrence["verbatimIdentification"].str.contains("Acartia_juv")).any()
    assert set(t.occurrence["scientificNameID"]) == {"urn:lsid:marinespecies.org:taxname:104108"}
    validated = t.occurrence[t.occurrence["identificationVerificationStatus"] == "ValidatedByHuman"]
    assert (validated["identifiedBy"] == "A. Expert").all() and len(validated) >= 1


def test_abundance_and_biovolume_per_volume(archive):
    _, preds, t = archive
    vol = {"S1": 5e-6, "S2": 2e-3}  # m³
    occ = t.occurrence.set_index("occurrenceID")
    for (ev, occ_id), grp in t.emof[t.emof["occurrenceID"] != ""].groupby(["eventID", "occurrenceID"]):
        kinds = dict(zip(grp["measurementTypeID"], grp["measurementValue"], strict=True))
        n = int(kinds[dwca.COUNT[1]])
        if ev not in vol:  # S3: no volume -> count only
            assert set(kinds) == {dwca.COUNT[1]}
            continue
        assert float(kinds[dwca.ABUNDANCE[1]]) == pytest.approx(n / vol[ev], rel=1e-5)
        status = occ.loc[occ_id, "identificationVerificationStatus"]
        mine = preds[preds["sample_id"] == ev]
        human = mine["expert"] != ""
        mine = (
            mine[human]
            if status == "ValidatedByHuman"
            else mine[~human & mine["top1_label"].str.startswith("Acartia")]
        )
        r_mm = np.sqrt(mine["area_px"] * PIXEL_MM**2 / math.pi)
        expect = float((4 / 3 * math.pi * r_mm**3).sum()) / vol[ev]
        assert float(kinds[dwca.BIOVOLUME[1]]) == pytest.approx(expect, rel=1e-5)
    units = t.emof.set_index("measurementTypeID")["measurementUnitID"].to_dict()
    assert units[dwca.ABUNDANCE[1]].endswith("/P06/current/UPMM/")
    assert units[dwca.BIOVOLUME[1]].endswith("/P06/current/CMCM/")
    instrument = t.emof[t.emof["measurementTypeID"] == dwca.INSTRUMENT[1]]
    assert len(instrument) == 3 and (instrument["measurementValueID"] == dwca.L22["flowcam"]).all()


def test_report_lists_excluded_labels(archive):
    tmp, _, t = archive
    rep = t.report
    assert rep["excluded_not_a_taxon"] == ["detritus"] and rep["excluded_unverified"] == ["Noctiluca"]
    # two detritus predictions were relabelled Acartia by the expert
    assert rep["labels"]["detritus"]["objects"] == 8 and rep["labels"]["Noctiluca"]["objects"] == 6
    assert rep["objects_in_occurrences"] == 14 + 2  # Acartia + Acartia_juv + 2 expert-validated rows
    assert "Noctiluca" not in set(t.occurrence["scientificName"])
    eml = etree.fromstring(zipfile.ZipFile(tmp / "dwca.zip").read("eml.xml"))
    assert eml.findtext("dataset/title") == "test_demo"
    assert eml.findtext("dataset/intellectualRights/para") == "CC-BY-4.0"
    assert "sha256 " + "m" * 64 in eml.findtext("dataset/methods/methodStep/description/para")


def test_an_unverified_label_stops_the_export_unless_the_config_opts_in(tmp_path):
    (tmp_path / "s.csv").write_text(SAMPLES)
    samples = dwca.read_samples(tmp_path / "s.csv")
    taxa = {x.label: x for x in TAXA}
    with pytest.raises(TaxonomyError, match=r"\['Noctiluca'\] of this campaign have no verified AphiaID"):
        dwca.build(predictions(), samples, taxa, dwca.Settings())
    # a campaign without the unverified label needs no opt-in
    preds = predictions().query("top1_label != 'Noctiluca'")
    assert dwca.build(preds, samples, taxa, dwca.Settings()).report["objects"] == 24


def test_unverified_included_without_scientific_name_id(tmp_path):
    (tmp_path / "s.csv").write_text(SAMPLES)
    s = dwca.Settings(unverified="include", instrument="FlowCam")
    # an AphiaID on an unverified row (a guess nobody checked) is never published
    taxa = {x.label: x for x in TAXA} | {
        "Noctiluca": Taxon("Noctiluca", "Noctiluca", 109390, status="unverified")
    }
    t = dwca.build(predictions(), dwca.read_samples(tmp_path / "s.csv"), taxa, s)
    noc = t.occurrence[t.occurrence["scientificName"] == "Noctiluca"]
    assert len(noc) == 3 and (noc["scientificNameID"] == "").all()
    assert noc["identificationRemarks"].str.contains("not verified").all()
    assert dwca.check(t) == []
    # OBIS QC flags the missing scientificNameID: what `unverified: exclude` avoids
    assert not check_fields(t.occurrence, analysis_type="occurrence_extension").empty


def test_min_score_leaves_low_scores_out(tmp_path):
    (tmp_path / "s.csv").write_text(SAMPLES)
    preds = predictions()
    s = dwca.Settings(min_score=0.7, unverified="exclude")
    t = dwca.build(preds, dwca.read_samples(tmp_path / "s.csv"), {x.label: x for x in TAXA}, s)
    kept = preds[preds["top1_label"].str.startswith("Acartia") & (preds["top1_prob"] >= 0.7)]
    expert = preds[
        (preds["expert"] != "") & (preds["top1_prob"] < 0.7) & ~preds["top1_label"].str.startswith("Acartia")
    ]
    n = t.emof[t.emof["measurementTypeID"] == dwca.COUNT[1]]["measurementValue"].astype(int).sum()
    assert n == len(kept) + len(expert)
    assert t.report["below_min_score"] == int((preds["top1_prob"] < 0.7).sum()) - int(
        ((preds["expert"] != "") & (preds["top1_prob"] < 0.7)).sum()
    )


def test_min_score_keeps_a_prediction_exactly_at_the_threshold(tmp_path):
    (tmp_path / "s.csv").write_text(SAMPLES)
    preds = predictions().assign(top1_prob=0.7)
    preds.loc[preds["top1_label"] == "Acartia_juv", "top1_prob"] = np.nextafter(0.7, 0)
    s = dwca.Settings(min_score=0.7, unverified="exclude")
    t = dwca.build(preds, dwca.read_samples(tmp_path / "s.csv"), {x.label: x for x in TAXA}, s)
    n = t.emof[t.emof["measurementTypeID"] == dwca.COUNT[1]]["measurementValue"].astype(int).sum()
    assert n == 10  # the 10 Acartia at exactly 0.7, not the 4 Acartia_juv just below
    assert t.report["below_min_score"] == 4 and t.report["min_score"] == 0.7


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            "eventID,eventDate,decimalLatitude\nS1,2024-01-01,1\n",
            "missing required column(s) ['decimalLongitude']",
        ),
        (
            "eventID,eventDate,decimalLatitude,decimalLongitude,depth\nS1,2024-01-01,1,2,3\n",
            "unknown column(s) ['depth']",
        ),
        ("eventID,eventDate,decimalLatitude,decimalLongitude\nS1,08/05/2024,1,2\n", "not ISO 8601"),
        ("eventID,eventDate,decimalLatitude,decimalLongitude\nS1,2024-01-01,95,2\n", "decimalLatitude"),
        (
            "eventID,eventDate,decimalLatitude,decimalLongitude\nS1,2024-01-01,1,2\nS1,2024-01-02,1,2\n",
            "unique",
        ),
        (
            "eventID,eventDate,decimalLatitude,decimalLongitude,sampleSizeValue,sampleSizeUnit\nS1,2024,1,2,3,cups\n",
            "sampleSizeUnit",
        ),
    ],
)
def test_bad_sample_table_names_file_and_problem(tmp_path, text, needle):
    (tmp_path / "samples.csv").write_text(text)
    with pytest.raises(dwca.DwcaError) as err:
        dwca.read_samples(tmp_path / "samples.csv")
    assert needle in str(err.value) and "samples.csv" in str(err.value)


def test_missing_sample_or_label_is_an_error(tmp_path):
    (tmp_path / "s.csv").write_text(SAMPLES)
    samples = dwca.read_samples(tmp_path / "s.csv")
    preds = predictions()
    with pytest.raises(dwca.DwcaError, match="S9"):
        dwca.build(preds.assign(sample_id="S9"), samples, {x.label: x for x in TAXA}, dwca.Settings())
    with pytest.raises(TaxonomyError, match="Oithona"):
        dwca.build(preds.assign(top1_label="Oithona"), samples, {x.label: x for x in TAXA}, dwca.Settings())


def test_own_checks_catch_broken_tables(archive):
    _, _, t = archive
    assert dwca.check(t) == []
    bad = dwca.Tables(t.event, t.occurrence.copy(), t.emof.copy(), {})
    bad.occurrence.loc[0, "scientificNameID"] = "urn:lsid:marinespecies.org:taxname:abc"
    bad.occurrence.loc[1, "occurrenceID"] = bad.occurrence.loc[0, "occurrenceID"]
    bad.emof.loc[0, "measurementUnit"] = ""
    problems = " | ".join(dwca.check(bad))
    for needle in ("LSID", "occurrenceID not unique", "no unit"):
        assert needle in problems


HIERARCHY = (
    "eventID,parentEventID,eventType,eventDate,decimalLatitude,decimalLongitude,sampleSizeValue,sampleSizeUnit,countryCode\n"
    "BE2024,,cruise,2024-05-08/2024-05-09,51.3,2.8,,,BE\n"
    "BE2024_st1,BE2024,stationVisit,2024-05-08T10:00:00Z,51.2,2.9,,,BE\n"
    "BE2024_st2,BE2024,stationVisit,2024-05-09T09:00:00Z,51.3,2.8,,,BE\n"
    "S1,BE2024_st1,sample,2024-05-08T10:00:00Z,51.2,2.9,5,mL,BE\n"
    "S2,BE2024_st2,sample,2024-05-09T09:00:00Z,51.3,2.8,2,L,BE\n"
    "S3,BE2024_st2,sample,2024-05-09T09:30:00Z,51.3,2.8,1,L,BE\n"
    "S9,BE2024_st2,sample,2024-05-09T10:00:00Z,51.3,2.8,1,L,BE\n"
)


def test_event_hierarchy_absences_and_sampling_device(tmp_path):
    """Cruise -> station visit -> sample from the samples table (parentEventID), the model's taxa
    not seen in a sample as absences, the net as an eMoF row per sample; OBIS QC passes."""
    (tmp_path / "s.csv").write_text(HIERARCHY)
    samples = dwca.read_samples(tmp_path / "s.csv")
    s = dwca.Settings(
        unverified="exclude",
        instrument="FlowCam",
        absences=True,
        classes=["Acartia", "Acartia_juv", "Noctiluca", "detritus", "Oithona"],
        sampling_device={
            "name": "WP2 net",
            "value_id": "http://vocab.nerc.ac.uk/collection/L22/current/TOOL0979/",
        },
    )
    taxa = {x.label: x for x in [*TAXA, Taxon("Oithona", "Oithona", 106485, "Genus", "Animalia", "verified")]}
    preds = predictions()  # S1, S2, S3: Acartia in each, no Oithona anywhere
    t = dwca.build(preds, samples, taxa, s)
    # S9 has no objects: not in the archive; the others with their station and the cruise, parents first
    assert list(t.event["eventID"]) == ["BE2024", "BE2024_st1", "BE2024_st2", "S1", "S2", "S3"]
    assert dict(zip(t.event["eventID"], t.event["parentEventID"], strict=True))["S3"] == "BE2024_st2"
    absent = t.occurrence[t.occurrence["occurrenceStatus"] == "absent"]
    assert sorted(absent["occurrenceID"]) == ["S1_A_106485", "S2_A_106485", "S3_A_106485"]
    assert (absent["scientificNameID"] == "urn:lsid:marinespecies.org:taxname:106485").all()
    counts = t.emof[t.emof["occurrenceID"].isin(absent["occurrenceID"])]
    assert counts["measurementValue"].tolist() == [0, 0, 0]
    device = t.emof[t.emof["measurementTypeID"] == dwca.SAMPLING_DEVICE[1]]
    assert sorted(device["eventID"]) == ["S1", "S2", "S3"] and set(device["measurementValue"]) == {"WP2 net"}
    assert set(t.emof["eventID"]) <= {"S1", "S2", "S3"}  # sample-level facts on the samples only
    assert dwca.check(t) == []
    assert check_eventids(t.event).empty  # pyobistools: every parentEventID is an event
    assert check_fields(t.event, analysis_type="event_core").empty
    assert check_fields(t.occurrence, analysis_type="occurrence_extension").empty
    assert check_measurementids(t.emof).empty
    dwca.write_archive(t, tmp_path / "h.zip", dwca.eml_xml(t, {}, "h", "test"))
    with DwCAReader(str(tmp_path / "h.zip")) as dw:  # python-dwca-reader: the hierarchy reads back
        assert {row.id: row.data[dwca.DWC + "parentEventID"] for row in dw}["BE2024_st1"] == "BE2024"
    # a parent the table lacks, or a cycle, is an error naming the table
    (tmp_path / "bad.csv").write_text(HIERARCHY.replace("S1,BE2024_st1", "S1,nowhere"))
    with pytest.raises(dwca.DwcaError, match=r"bad.csv: parentEventID \['nowhere'\]"):
        dwca.read_samples(tmp_path / "bad.csv")
    (tmp_path / "loop.csv").write_text(HIERARCHY.replace("BE2024,,cruise", "BE2024,S1,cruise"))
    with pytest.raises(dwca.DwcaError, match="cycle"):
        dwca.read_samples(tmp_path / "loop.csv")
