"""Darwin Core Archive checks pinned value by value (mutation testing: `make mutate
MUTATE=standards/dwca.py`): each rule of `check` alone, the hierarchy check, the
identificationReferences text, and the small parsers."""

from __future__ import annotations

import json
import math
import zipfile

import pandas as pd
import pytest

from aquaflow import __version__
from aquaflow.standards import dwca
from aquaflow.standards.taxonomy import Taxon, TaxonomyError, write_table

from .test_dwca import archive  # noqa: F401 (a fixture)


def broken(t: dwca.Tables, table: str, column: str, row: int, value) -> dwca.Tables:
    """A copy of `t` with one cell of one table changed (value "<dup>": row `row` added again)."""
    frames = {"event": t.event.copy(), "occurrence": t.occurrence.copy(), "emof": t.emof.copy()}
    if value == "<dup>":
        frames[table] = pd.concat([frames[table], frames[table].iloc[[row]]], ignore_index=True)
    else:
        frames[table].loc[frames[table].index[row], column] = value
    return dwca.Tables(frames["event"], frames["occurrence"], frames["emof"], {})


@pytest.mark.parametrize(
    ("table", "column", "row", "value", "problem"),
    [
        ("event", "eventID", 0, "<dup>", "eventID not unique"),
        ("occurrence", "occurrenceID", 0, "<dup>", "occurrenceID not unique"),
        ("occurrence", "eventID", 0, "nowhere", "an extension row names an eventID missing from the core"),
        ("emof", "eventID", 0, "nowhere", "an extension row names an eventID missing from the core"),
        (
            "emof",
            "occurrenceID",
            0,
            "nowhere",
            "an eMoF row names an occurrenceID missing from the occurrences",
        ),
        ("occurrence", "basisOfRecord", 0, "HumanObservation", "basisOfRecord must be MachineObservation"),
        ("event", "parentEventID", 0, "nowhere", "a parentEventID names no event of the archive"),
        ("emof", "measurementUnit", 0, "", "an eMoF row has no unit"),
        ("emof", "measurementUnitID", 0, "", "an eMoF row has no unit"),
        ("event", "eventDate", 0, "08/05/2024", "eventDate not ISO 8601"),
        ("occurrence", "scientificName", 0, "", "an occurrence has no scientificName"),
    ],
)
def test_each_rule_of_check_alone(archive, table, column, row, value, problem):  # noqa: F811
    """A clean archive has no problem; one broken cell gives exactly its rule's message."""
    _, _, t = archive
    assert dwca.check(t) == []
    if column == "parentEventID" and column not in t.event:
        t.event["parentEventID"] = ""
    assert dwca.check(broken(t, table, column, row, value)) == [problem]


def test_check_names_the_offending_values(archive):  # noqa: F811
    _, _, t = archive
    lsid = "urn:lsid:marinespecies.org:taxname:abc"
    assert dwca.check(broken(t, "occurrence", "scientificNameID", 0, lsid)) == [
        f"scientificNameID not a WoRMS LSID: {[lsid]}"
    ]
    statuses = sorted(dwca.VERIFICATION.values())
    assert dwca.check(broken(t, "occurrence", "identificationVerificationStatus", 0, "guessed")) == [
        f"identificationVerificationStatus outside {statuses}"
    ]
    assert dwca.check(broken(t, "occurrence", "occurrenceStatus", 0, "maybe")) == [
        "occurrenceStatus outside ('present', 'detected', 'absent', 'notDetected')"
    ]
    assert dwca.check(broken(t, "emof", "measurementTypeID", 0, "http://example.org/x")) == [
        "measurementTypeID outside the NERC P01 codes this exporter knows"
    ]
    # an empty scientificNameID (an unverified taxon) and an empty parentEventID (a root) are fine
    t.event["parentEventID"] = ""
    assert dwca.check(broken(t, "occurrence", "scientificNameID", 0, "")) == []


def test_check_hierarchy_unknown_parent_and_cycle():
    ok = pd.DataFrame({"eventID": ["cruise", "st1", "s1"], "parentEventID": ["", "cruise", "st1"]})
    dwca.check_hierarchy(ok, "samples.csv")
    dwca.check_hierarchy(ok.drop(columns="parentEventID"), "samples.csv")
    unknown = ok.assign(parentEventID=["", "cruise", "st9"])
    with pytest.raises(
        dwca.DwcaError, match=r"^samples.csv: parentEventID \['st9'\] not an eventID of the table$"
    ):
        dwca.check_hierarchy(unknown, "samples.csv")
    cycle = ok.assign(parentEventID=["s1", "cruise", "st1"])
    with pytest.raises(dwca.DwcaError, match=r"^samples.csv: parentEventID cycle through '(cruise|st1|s1)'$"):
        dwca.check_hierarchy(cycle, "samples.csv")


def test_references_text():
    card = {"id": "ab12", "arch": "lcnet_050", "backend": "keras", "mlflow": {"run_id": "r1"}}
    preds = pd.DataFrame({"model_id": ["cd34"], "run_id": ["run9"]})
    software = f"software: aquaflow {__version__}"
    assert dwca.references(card, preds) == (
        f"model: sha256 ab12 (lcnet_050, keras) | MLflow run r1 | {software} | inference run run9"
    )
    assert dwca.references({"id": "ab12"}, preds.iloc[:0]) == (
        f"model: sha256 ab12 (, torch) | software: aquaflow {__version__}"
    )
    assert dwca.references(None, preds) == (
        f"model: sha256 cd34 | software: aquaflow {__version__} | inference run run9"
    )


def test_number_slug_and_tsv():
    assert dwca._number("", "x") is None
    assert dwca._number("2.5", "x") == 2.5
    with pytest.raises(dwca.DwcaError, match=r"^samples.csv row 3 'five' is not a number$"):
        dwca._number("five", "samples.csv row 3")
    assert dwca._slug("  Acartia (juv.)/sp 2 ") == "Acartia_juv_sp_2"
    assert dwca._slug("__x__") == "x"
    df = pd.DataFrame({"a": ["1", "2"], "b": ["x y", ""]})
    assert dwca._tsv(df) == b"a\tb\n1\tx y\n2\t\n"
    for bad in ("x\ty", "x\ny", "x\ry"):
        with pytest.raises(dwca.DwcaError, match=r"^column b holds a tab or newline; fix the source value$"):
            dwca._tsv(df.assign(b=["ok", bad]))


def test_eml_fields_coverage_and_defaults():
    """Every EML field from the config (escaped), the creator party thrice, the bounding box and
    date range of the events (the start of an interval); an empty config gives empty fields and
    creator 'unknown'."""
    from lxml import etree

    event = pd.DataFrame(
        {
            "eventID": ["S1", "S2", "S3"],
            "decimalLatitude": ["51.2", "51.4", "50.9"],
            "decimalLongitude": ["2.9", "-3.1", "2.7"],
            "eventDate": ["2024-05-09T10:00:00Z", "2024-05/2024-06", "2024-06-01T08:00:00Z"],
        }
    )
    t = dwca.Tables(event, pd.DataFrame(), pd.DataFrame(), {})
    eml = {
        "title": "Plankton & more",
        "creator": "A. Expert",
        "organization": "VLIZ",
        "email": "a@vliz.be",
        "abstract": "Counts <per> sample",
        "license": "CC-BY-4.0",
        "unused": None,
    }
    root = etree.fromstring(dwca.eml_xml(t, eml, "pkg<1>", "model & method").encode())
    ds = root.find("dataset")
    assert root.get("packageId") == "pkg<1>" and root.get("system") == "aquaflow"
    assert ds.findtext("title") == "Plankton & more"
    assert ds.findtext("abstract/para") == "Counts <per> sample"
    assert ds.findtext("intellectualRights/para") == "CC-BY-4.0"
    for role in ("creator", "metadataProvider", "contact"):
        party = ds.find(role)
        assert party.findtext("individualName/surName") == "A. Expert"
        assert party.findtext("organizationName") == "VLIZ"
        assert party.findtext("electronicMailAddress") == "a@vliz.be"
    box = ds.find("coverage/geographicCoverage/boundingCoordinates")
    assert [box.findtext(f"{side}BoundingCoordinate") for side in ("west", "east", "north", "south")] == [
        "-3.100000",
        "2.900000",
        "51.400000",
        "50.900000",
    ]
    dates = ds.find("coverage/temporalCoverage/rangeOfDates")
    assert dates.findtext("beginDate/calendarDate") == "2024-05"
    assert dates.findtext("endDate/calendarDate") == "2024-06-01"
    assert ds.findtext("methods/methodStep/description/para") == "model & method"

    empty = etree.fromstring(dwca.eml_xml(t, {}, "pkg", "").encode()).find("dataset")
    assert [empty.findtext(k) or "" for k in ("title", "abstract/para", "intellectualRights/para")] == [
        "",
        "",
        "",
    ]
    assert empty.findtext("creator/individualName/surName") == "unknown"
    assert (empty.findtext("contact/organizationName") or "") == ""
    assert (empty.findtext("contact/electronicMailAddress") or "") == ""


# --- exact rows of build and of its row makers --------------------------------------------------------

K = 4 / (3 * math.sqrt(math.pi))  # ESD-sphere biovolume = K * area^1.5
TAXA = {
    "A": Taxon("A", "Alpha", 1, "Genus", "Animalia", "verified"),
    "A_juv": Taxon("A_juv", "Alpha", 1, "Genus", "Animalia", "verified"),
    "B": Taxon("B", "Beta gamma", 2, "Species", "Chromista", "verified"),
    "U": Taxon("U", "Ursus", 3, "Genus", "Animalia", "unverified"),
    "D": Taxon("D", "", None, "", "", "not_a_taxon"),
}


def _samples() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "eventID": ["C", "S1", "S2", "S9"],
            "parentEventID": ["", "C", "C", ""],
            "eventDate": ["2024-05", "2024-05-08", "2024-05-09", "2024-06-01"],
            "decimalLatitude": ["50", "51", "52", "53"],
            "decimalLongitude": ["2", "3", "4", "5"],
            "sampleSizeValue": ["", "2", "", ""],
            "sampleSizeUnit": ["", "L", "", ""],
        }
    )


def _preds() -> pd.DataFrame:
    """S1: A and A_juv (one taxon) predicted, one A below min_score, two validated A (one of them
    with a low score); S2: only a non-taxon and an unverified label."""
    return pd.DataFrame(
        {
            "sample_id": ["S1", "S1", "S1", "S1", "S2", "S2", "S1"],
            "top1_label": ["A", "A_juv", "A", "U", "D", "U", "A"],
            "top1_prob": [0.9, 0.6, 0.4, 0.95, 0.99, 0.8, 0.3],
            "area_px": [100, 400, 100, 100, 100, 100, 100],
            "expert": ["", "", "", "A", None, "", " A "],
        }
    )


def _settings(**kw) -> dwca.Settings:
    base = {
        "validated_column": "expert", "identified_by": "X. Pert", "min_score": 0.5, "pixel_size_mm": 0.1,
        "instrument": "FlowCam", "unverified": "exclude", "absences": True, "classes": ["A", "B"],
        "references": "refs",
    }  # fmt: skip
    return dwca.Settings(**{**base, **kw})


def test_build_rows_exactly():
    t = dwca.build(_preds(), _samples(), TAXA, _settings())
    assert t.event.columns.tolist() == [c for c in dwca.EVENT_TERMS if c in _samples()]
    assert t.event["eventID"].tolist() == ["C", "S1", "S2"] and t.event.index.tolist() == [0, 1, 2]
    occ = t.occurrence
    assert occ.columns.tolist() == dwca.OCCURRENCE_TERMS
    cols = ["eventID", "occurrenceID", "occurrenceStatus", "verbatimIdentification", "identifiedBy"]
    assert occ[cols].values.tolist() == [
        ["S1", "S1_P_1", "present", "A | A_juv", ""],
        ["S1", "S1_V_1", "present", "A", "X. Pert"],
        ["S1", "S1_A_2", "absent", "B", ""],
        ["S2", "S2_A_1", "absent", "A", ""],
        ["S2", "S2_A_2", "absent", "B", ""],
    ]
    assert occ["scientificName"].tolist() == ["Alpha", "Alpha", "Beta gamma", "Alpha", "Beta gamma"]
    machine = "PredictedByMachine"
    assert occ["identificationVerificationStatus"].tolist() == [machine, "ValidatedByHuman", *[machine] * 3]
    absent = (
        "no object of this class in the sample (top-1 label of an image classifier); "
        "a classifier's non-detection is weak evidence of absence"
    )
    assert occ["identificationRemarks"].tolist()[2:] == [absent] * 3
    emof = t.emof
    assert emof.columns.tolist() == dwca.EMOF_TERMS
    bv_p, bv_v = K * (1 + 4**1.5) / 0.002, K * 2 / 0.002
    assert emof[["measurementID", "measurementValue"]].values.tolist() == [
        ["S1_P_1_count", 2],
        ["S1_P_1_abundance", "1000"],
        ["S1_P_1_biovolume", dwca._fmt(bv_p)],
        ["S1_V_1_count", 2],
        ["S1_V_1_abundance", "1000"],
        ["S1_V_1_biovolume", dwca._fmt(bv_v)],
        ["S1_A_2_count", 0],
        ["S2_A_1_count", 0],
        ["S2_A_2_count", 0],
        ["S1_volume", "0.002"],
        ["S1_instrument", "FlowCam"],
        ["S2_instrument", "FlowCam"],
    ]
    assert (
        emof["occurrenceID"].tolist()
        == ["S1_P_1"] * 3 + ["S1_V_1"] * 3 + ["S1_A_2", "S2_A_1", "S2_A_2"] + [""] * 3
    )
    assert emof["measurementMethod"].tolist()[:2] == [
        "objects classified in the imaged volume",
        "2 objects / 0.002 m3 imaged",
    ]
    assert t.report == {
        "objects": 7,
        "labels": {
            "A": {"status": "verified", "objects": 4},
            "A_juv": {"status": "verified", "objects": 1},
            "D": {"status": "not_a_taxon", "objects": 1},
            "U": {"status": "unverified", "objects": 1},
        },
        "excluded_not_a_taxon": ["D"],
        "excluded_unverified": ["U"],
        "below_min_score": 1,
        "min_score": 0.5,
        "events": 3,
        "occurrences": 5,
        "emof_rows": 12,
        "objects_in_occurrences": 4,
    }
    assert dwca.check(t) == []


def test_build_variants_include_no_absences_min_score_and_errors():
    t = dwca.build(_preds(), _samples(), TAXA, _settings(unverified="include", absences=False, min_score=0.0))
    assert t.occurrence["occurrenceID"].tolist() == ["S1_P_1", "S1_V_1", "S2_P_Ursus"]  # no LSID: by name
    lsid = "urn:lsid:marinespecies.org:taxname:1"
    assert t.occurrence["scientificNameID"].tolist() == [lsid, lsid, ""]
    assert t.emof["measurementValue"].tolist()[0] == 3
    assert t.report["excluded_unverified"] == [] and t.report["below_min_score"] == 0
    assert t.report["objects_in_occurrences"] == 6
    at = dwca.build(_preds(), _samples(), TAXA, _settings(absences=False, min_score=0.9))
    assert (
        at.occurrence["occurrenceID"].tolist() == ["S1_P_1", "S1_V_1"] and at.report["below_min_score"] == 3
    )
    assert at.emof["measurementValue"].tolist()[0] == 1
    with pytest.raises(
        dwca.DwcaError, match=r"^export.dwca.occurrence_status 'seen' not in \('present', 'detected'\)$"
    ):
        dwca.build(_preds(), _samples(), TAXA, _settings(occurrence_status="seen"))
    with pytest.raises(
        dwca.DwcaError, match=r"^objects of sample\(s\) \['S7'\] have no row in the sample table"
    ):
        dwca.build(_preds().assign(sample_id="S7"), _samples(), TAXA, _settings())
    detected = dwca.build(_preds(), _samples(), TAXA, _settings(occurrence_status="detected"))
    assert detected.occurrence["occurrenceStatus"].tolist() == ["detected"] * 2 + ["notDetected"] * 3


def test_build_cover_of_masks_per_sample_of_a_detection_campaign():
    preds = _preds().assign(mask_area_px=[10.0, 30.0, 5.0, 20.0, 1.0, 1.0, 40.0])
    images = pd.DataFrame({"sample": ["S1", "S1", "S2", "S2"], "area_px": [500, 500, 100, 100]})
    t = dwca.build(preds, _samples(), TAXA, _settings(kind="detect", absences=False), images)
    cover = t.emof[t.emof["measurementID"].str.endswith("_cover")]
    assert cover["measurementValue"].tolist() == ["4", "6"]  # (10 + 30) / 1000, (20 + 40) / 1000
    assert cover["measurementMethod"].tolist()[0] == (
        "sum of the 2 instance masks' pixels (40) / pixels of every image of the sample (1000) x 100; "
        "overlaps between masks count twice"
    )
    assert t.event["eventID"].tolist() == ["C", "S1", "S2"]
    assert t.occurrence["identificationRemarks"].tolist()[0] == (
        "class of a detection by an object detector; score threshold 0.5; not validated by a human"
    )
    no_masks = dwca.build(_preds(), _samples(), TAXA, _settings(absences=False), images)
    assert not no_masks.emof["measurementID"].str.endswith("_cover").any()
    # an imaged sample without objects is an event of its own
    only_s9 = dwca.build(_preds(), _samples(), TAXA, _settings(absences=False), images.assign(sample="S9"))
    assert only_s9.event["eventID"].tolist() == ["C", "S9", "S1", "S2"]  # roots first


def test_row_makers_exact():
    taxon = TAXA["A"]
    s = _settings(min_score=0.25)
    assert dwca._occurrence("S1", "S1_P_1", "P", taxon, ["A", "A_juv"], s) == {
        "eventID": "S1", "occurrenceID": "S1_P_1", "basisOfRecord": "MachineObservation",
        "occurrenceStatus": "present", "scientificName": "Alpha",
        "scientificNameID": "urn:lsid:marinespecies.org:taxname:1", "taxonRank": "Genus",
        "kingdom": "Animalia", "verbatimIdentification": "A | A_juv", "identifiedBy": "",
        "identificationVerificationStatus": "PredictedByMachine", "identificationReferences": "refs",
        "identificationRemarks": (
            "top-1 label of an image classifier; score threshold 0.25; not validated by a human"
        ),
        "associatedMedia": "",
    }  # fmt: skip
    v = dwca._occurrence("S1", "o", "V", TAXA["U"], ["U"], s)
    assert (v["identifiedBy"], v["identificationVerificationStatus"], v["identificationRemarks"]) == (
        "X. Pert", "ValidatedByHuman", "machine prediction checked by a human; AphiaID not verified in WoRMS"
    )  # fmt: skip
    assert dwca._mof("e", "o", dwca.COUNT, 3, "dimensionless") == {
        "eventID": "e", "occurrenceID": "o", "measurementType": dwca.COUNT[0],
        "measurementTypeID": dwca.COUNT[1], "measurementValue": 3, "measurementValueID": "",
        "measurementUnit": "Dimensionless", "measurementUnitID": dwca.NVS + "P06/current/UUUU/",
        "measurementMethod": "", "measurementRemarks": "",
    }  # fmt: skip
    kw = dwca._mof("e", "", dwca.VOLUME, "1", "m3", "how", value_id="vid", remarks="rem")
    assert (kw["measurementValueID"], kw["measurementRemarks"], kw["measurementMethod"]) == (
        "vid",
        "rem",
        "how",
    )
    grp = pd.DataFrame({"mask_area_px": [100.0, 50.4]})
    assert dwca._cover("e", "o", grp, 1000.0, "detect") == dwca._mof(
        "e", "o", dwca.COVER, "15.04", "percent",
        "sum of the 2 instance masks' pixels (150) / pixels of every image of the sample (1000) x 100; "
        "overlaps between masks count twice",
    )  # fmt: skip
    assert dwca._cover("e", "o", grp, 0.0, "detect")["measurementValue"] == "0"
    device = {"name": "WP2 net", "value_id": "http://l22/net"}
    rows = dwca._event_measurements("e", 0.5, "Flow Cam", device)
    assert [(r["measurementTypeID"], r["measurementValue"], r["measurementValueID"]) for r in rows] == [
        (dwca.SAMPLING_DEVICE[1], "WP2 net", "http://l22/net"),
        (dwca.VOLUME[1], "0.5", ""),
        (dwca.INSTRUMENT[1], "Flow Cam", dwca.L22["flowcam"]),
    ]
    assert [r["measurementUnit"] for r in rows] == ["Not applicable", "Cubic metres", "Not applicable"]
    assert rows[1]["measurementMethod"] == "volume imaged (sampleSizeValue)" and rows[0]["occurrenceID"] == ""
    assert dwca._event_measurements("e", None, "unknown", {"name": "net"}) == [
        dwca._mof("e", "", dwca.SAMPLING_DEVICE, "net", "na")
    ]
    assert dwca._event_measurements("e", 0.0, "", {"value_id": "x"}) == []
    assert dwca._event_measurements("e", None, "Microscope")[0]["measurementValueID"] == ""


def test_copy_samples_cell_for_cell(tmp_path):
    (tmp_path / "s.tsv").write_text("eventID\tlocality\tsampleSizeValue\nS1\tNA\t\nS2\t a, b \t2\n")
    dwca.copy_samples(tmp_path / "s.tsv", tmp_path / "out.csv")
    assert (tmp_path / "out.csv").read_text() == 'eventID,locality,sampleSizeValue\nS1,NA,\nS2," a, b ",2\n'
    (tmp_path / "s.txt").write_text("eventID\tx\nS1\t1\n")
    dwca.copy_samples(tmp_path / "s.txt", tmp_path / "out2.csv")
    assert (tmp_path / "out2.csv").read_text() == "eventID,x\nS1,1\n"
    (tmp_path / "s.csv").write_text("eventID,x\nS1,\tNone\n")
    dwca.copy_samples(tmp_path / "s.csv", tmp_path / "out3.csv")
    assert (tmp_path / "out3.csv").read_text() == "eventID,x\nS1,\tNone\n"


def _read(tmp_path, text, name="s.csv"):
    (tmp_path / name).write_text(text)
    return dwca.read_samples(tmp_path / name)


HEAD = "eventID,eventDate,decimalLatitude,decimalLongitude"
UNITS = "['cubic metre', 'l', 'litre', 'm3', 'millilitre', 'ml']"


def test_read_samples_cleans_and_completes(tmp_path):
    cols = " eventID ,eventDate,decimalLatitude,decimalLongitude,sampleSizeValue,sampleSizeUnit\n"
    df = _read(tmp_path, cols + " S1 ,2024-05-08, 90 ,-180,5,ML\nS2,2024,-90,180,,\n")
    assert df.to_dict(orient="list") == {
        "eventID": ["S1", "S2"], "eventDate": ["2024-05-08", "2024"], "decimalLatitude": ["90", "-90"],
        "decimalLongitude": ["-180", "180"], "sampleSizeValue": ["5", ""], "sampleSizeUnit": ["ML", ""],
        "geodeticDatum": ["EPSG:4326", "EPSG:4326"],
    }  # fmt: skip
    tsv = _read(
        tmp_path,
        "eventID\teventDate\tdecimalLatitude\tdecimalLongitude\tgeodeticDatum\nS1\t2024\t1\t2\tEPSG:3857\n",
        "s.tsv",
    )
    assert tsv["geodeticDatum"].tolist() == ["EPSG:3857"] and tsv.index.tolist() == [0]
    txt = _read(tmp_path, "eventID\teventDate\tdecimalLatitude\tdecimalLongitude\nNA\t2024\t1\t2\n", "s.txt")
    assert txt["eventID"].tolist() == ["NA"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{HEAD},depth\nS1,2024,1,2,3\n", ": unknown column(s) ['depth']; allowed: "),
        ("eventID,eventDate,decimalLatitude\nS1,2024,1\n",
         ": missing required column(s) ['decimalLongitude']"),
        (f"{HEAD}\n,2024,1,2\n", ": eventID must be filled and unique"),
        (f"{HEAD}\nS1,2024,1,2\nS1,2024,1,2\n", ": eventID must be filled and unique"),
        (f"{HEAD}\nS1,2024,1,2\nS2,08/05/2024,1,2\n",
         " row 3 (S2): eventDate '08/05/2024' is not ISO 8601 (e.g. 2024-05-08T20:50:00Z)"),
        (f"{HEAD}\nS1,2024,90.5,2\n", " row 2 (S1): decimalLatitude '90.5' must be a number in [-90, 90]"),
        (f"{HEAD}\nS1,2024,1,-180.5\n",
         " row 2 (S1): decimalLongitude '-180.5' must be a number in [-180, 180]"),
        (f"{HEAD}\nS1,2024,,2\n", " row 2 (S1): decimalLatitude '' must be a number in [-90, 90]"),
        (f"{HEAD}\nS1,2024,north,2\n", " row 2 (S1): decimalLatitude 'north' is not a number"),
        (f"{HEAD},sampleSizeValue,sampleSizeUnit\nS1,2024,1,2,5,gallon\n",
         " row 2 (S1): sampleSizeUnit 'gallon' must be one of " + UNITS),
        (f"{HEAD},sampleSizeValue\nS1,2024,1,2,5\n",
         " row 2 (S1): sampleSizeUnit None must be one of " + UNITS),
        (f"{HEAD},sampleSizeValue,sampleSizeUnit\nS1,2024,1,2,five,L\n",
         " row 2 (S1): sampleSizeValue 'five' is not a number"),
        (f"{HEAD},parentEventID\nS1,2024,1,2,S0\n", ": parentEventID ['S0'] not an eventID of the table"),
    ],
)  # fmt: skip
def test_read_samples_errors_name_file_row_and_problem(tmp_path, text, message):
    with pytest.raises(dwca.DwcaError) as err:
        _read(tmp_path, text)
    assert str(err.value).startswith(f"{tmp_path / 's.csv'}{message}"), str(err.value)


def test_read_samples_of_a_missing_file(tmp_path):
    with pytest.raises(dwca.DwcaError) as err:
        dwca.read_samples(tmp_path / "none.csv")
    assert (
        str(err.value) == f"sample table {tmp_path / 'none.csv'} does not exist (campaign key samples.path)"
    )


def test_export_writes_the_report_and_the_eml_methods(archive):  # noqa: F811
    from lxml import etree

    tmp_path, preds, t = archive
    report = json.loads((tmp_path / "report.json").read_text())
    assert report == json.loads(json.dumps({**t.report, "package_id": "test_demo", "checks": "passed"}))
    with zipfile.ZipFile(tmp_path / "dwca.zip") as zf:
        eml = etree.fromstring(zf.read("eml.xml")).find("dataset")
    refs = dwca.references({"id": "m" * 64, "arch": "lcnet_050", "mlflow": {"run_id": "abc"}}, preds)
    assert eml.findtext("title") == "test_demo"  # no eml.title: the package id
    assert eml.findtext("intellectualRights/para") == "CC-BY-4.0"
    assert eml.findtext("methods/methodStep/description/para") == (
        f"Objects imaged with FlowCam were classified by a machine-learning model ({refs}). "
        "One occurrence per sample, taxon and verification status; counts, abundance, biovolume and "
        "cover in the ExtendedMeasurementOrFact extension."
    )
    assert set(t.occurrence["identificationReferences"]) == {refs}
    assert set(t.occurrence["identifiedBy"]) == {"", "A. Expert"}


def test_settings_from_config_takes_its_keys_and_ignores_others():
    cfg = {
        "occurrence_status": "detected", "unverified": "include", "min_score": 0.3,
        "validated_column": "expert", "identified_by": "X", "area_column": "area", "pixel_size_mm": 0.01,
        "absences": True, "sampling_device": {"name": "net"}, "eml": {"title": "T"}, "instrument": "no",
    }  # fmt: skip
    s = dwca.Settings.from_config(cfg, instrument="FlowCam", classes=["a"])
    want = {k: v for k, v in cfg.items() if k != "instrument"}
    assert {k: getattr(s, k) for k in want} == want and (s.instrument, s.classes) == ("FlowCam", ["a"])


def test_export_with_a_default_sample_the_models_classes_and_an_eml_title(tmp_path):
    preds = _preds().drop(columns="sample_id")
    preds.to_parquet(tmp_path / "p.parquet")
    _samples().to_csv(tmp_path / "samples.csv", index=False)
    write_table(list(TAXA.values()), tmp_path / "taxa.tsv")
    cfg = {"validated_column": "expert", "unverified": "exclude", "absences": True, "eml": {"title": "T"}}
    t = dwca.export(
        predictions=tmp_path / "p.parquet", samples=tmp_path / "samples.csv", taxonomy=tmp_path / "taxa.tsv",
        out=tmp_path / "a.zip", report=tmp_path / "r.json", cfg=cfg, instrument="FlowCam",
        sample_column="sample_id", default_sample="S2", package_id="pkg", card={"classes": ["A", "B"]},
    )  # fmt: skip
    assert t.occurrence["occurrenceID"].tolist() == ["S2_P_1", "S2_V_1", "S2_A_2"]
    with zipfile.ZipFile(tmp_path / "a.zip") as zf:
        assert {i.compress_type for i in zf.infolist()} == {zipfile.ZIP_DEFLATED}
        assert b'<title xml:lang="en">T</title>' in zf.read("eml.xml")
        meta = zf.read("meta.xml").decode()
    assert 'term="http://rs.iobis.org/obis/terms/measurementTypeID"' in meta
    assert 'term="http://rs.tdwg.org/dwc/terms/measurementType"' in meta
    with pytest.raises(TaxonomyError, match=r"taxa\.tsv"):  # unverified labels: the taxonomy file is named
        dwca.export(
            predictions=tmp_path / "p.parquet", samples=tmp_path / "samples.csv",
            taxonomy=tmp_path / "taxa.tsv", out=tmp_path / "b.zip", report=tmp_path / "r2.json",
            cfg={}, instrument="FlowCam", sample_column="sample_id", default_sample="S2", package_id="pkg",
        )  # fmt: skip


def test_small_helpers_at_their_edges():
    assert dwca._slug("X-ray fish") == "X_ray_fish"
    assert (
        dwca._cover("e", "o", pd.DataFrame({"mask_area_px": [1.0]}), 1.0, "detect")["measurementValue"]
        == "100"
    )
    assert dwca.references({"arch": "a"}, pd.DataFrame({"run_id": ["r"]})) == (
        f"model: sha256  (a, torch) | software: aquaflow {__version__} | inference run r"
    )
    assert dwca.references(None, pd.DataFrame({"run_id": ["r"]})) == (
        f"software: aquaflow {__version__} | inference run r"
    )
    six = pd.DataFrame({"eventID": ["s"], "parentEventID": ["p1"]})
    six = pd.concat([six] + [six.assign(eventID=f"s{i}", parentEventID=f"p{i + 1}") for i in range(1, 6)])
    with pytest.raises(dwca.DwcaError) as err:
        dwca.check_hierarchy(six, "x.csv")
    assert str(err.value) == "x.csv: parentEventID ['p1', 'p2', 'p3', 'p4', 'p5'] not an eventID of the table"
    loop = pd.DataFrame({"eventID": ["a", "b", "c"], "parentEventID": ["b", "c", "b"]})  # a leads into it
    with pytest.raises(dwca.DwcaError, match="cycle through"):
        dwca.check_hierarchy(loop, "x.csv")


def test_absences_count_rows_say_how_objects_were_counted():
    t = dwca.build(_preds(), _samples(), TAXA, _settings())
    absent = t.emof[t.emof["occurrenceID"].str.contains("_A_")]
    assert absent["measurementMethod"].tolist() == ["objects classified in the imaged volume"] * 3
    t = dwca.build(_preds(), _samples(), TAXA, _settings(kind="detect"))
    absent = t.emof[t.emof["occurrenceID"].str.contains("_A_")]
    assert absent["measurementMethod"].tolist() == ["objects detected in the sample's images"] * 3


def test_copy_samples_keeps_text_that_looks_like_numbers(tmp_path):
    (tmp_path / "s.csv").write_text("eventID,sampleSizeValue\n007,2.50\n")
    dwca.copy_samples(tmp_path / "s.csv", tmp_path / "o.csv")
    assert (tmp_path / "o.csv").read_text() == "eventID,sampleSizeValue\n007,2.50\n"


def test_object_table_messages_biovolume_method_and_cover_ids():
    with pytest.raises(dwca.DwcaError) as err:
        dwca.build(_preds().drop(columns="sample_id"), _samples(), TAXA, _settings())
    assert (
        str(err.value) == "predictions have no column 'sample_id' and the campaign has no metadata.sample_id"
    )
    with pytest.raises(dwca.DwcaError) as err:
        dwca.build(_preds(), _samples(), TAXA, _settings(validated_column="checked"))
    assert str(err.value) == "export.dwca.validated_column: predictions have no column 'checked'"
    t = dwca.build(_preds(), _samples(), TAXA, _settings(absences=False))
    bio = t.emof[t.emof["measurementID"].str.endswith("_biovolume")]
    assert set(bio["measurementMethod"]) == {
        "sum of ESD-sphere biovolumes (area in pixels x pixel size) / volume imaged"
    }
    no_area = dwca.build(_preds().drop(columns="area_px"), _samples(), TAXA, _settings(absences=False))
    assert not no_area.emof["measurementID"].str.endswith("_biovolume").any()  # unknown areas: no row
    preds = _preds().assign(mask_area_px=[10.0, 30.0, 5.0, 20.0, 1.0, 1.0, 40.0])
    images = pd.DataFrame({"sample": ["S1", "S2"], "area_px": [1000, 100]})
    t = dwca.build(preds, _samples(), TAXA, _settings(kind="detect", absences=False), images)
    cover = t.emof[t.emof["measurementID"].str.endswith("_cover")]
    assert cover[["eventID", "occurrenceID", "measurementID"]].values.tolist() == [
        ["S1", "S1_P_1", "S1_P_1_cover"],
        ["S1", "S1_V_1", "S1_V_1_cover"],
    ]
