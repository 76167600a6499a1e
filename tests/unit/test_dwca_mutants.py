"""Darwin Core Archive checks pinned value by value (mutation testing: `make mutate
MUTATE=standards/dwca.py`): each rule of `check` alone, the hierarchy check, the
identificationReferences text, and the small parsers."""

from __future__ import annotations

import pandas as pd
import pytest

from aquaflow import __version__
from aquaflow.standards import dwca

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
