"""A Darwin Core Archive read and checked with tools that are not ours: the TDWG text XSD (meta.xml),
python-dwca-reader (the tables, every extension row on a core row) and pyobistools (OBIS QC)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
from dwca.read import DwCAReader
from lxml import etree
from pyobistools.validation.check_eventids import check_extension_eventids
from pyobistools.validation.check_fields import check_fields
from pyobistools.validation.check_occurrence_core_and_extension import check_occurrence_core_and_extension

XSD = Path(__file__).resolve().parent / "data" / "xsd" / "tdwg_dwc_text.xsd"


def meta_xml_errors(archive: str | Path) -> list[str]:
    """The archive's meta.xml against the TDWG text XSD: [] when valid."""
    schema = etree.XMLSchema(etree.parse(str(XSD), etree.XMLParser(no_network=True)))
    if schema.validate(etree.fromstring(zipfile.ZipFile(archive).read("meta.xml"))):
        return []
    return [str(e) for e in schema.error_log]


def read_archive(archive: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(event, occurrence, eMoF) as python-dwca-reader reads them, columns by term name (the core id
    and the extensions' coreid as eventID); every extension row hangs off a core row."""
    with DwCAReader(str(archive)) as dw:
        core_ids = [row.id for row in dw]
        n_ext = sum(len(row.extensions) for row in dw)
        tables = [
            dw.pd_read(name, dtype=str, keep_default_na=False)
            for name in ("event.txt", "occurrence.txt", "extendedmeasurementorfact.txt")
        ]
    for df in tables:
        df.columns = [c.rsplit("/", 1)[-1].replace("coreid", "eventID") for c in df.columns]
    ev, occ, emof = tables
    ev = ev.rename(columns={"id": "eventID"})
    assert list(ev["eventID"]) == core_ids and n_ext == len(occ) + len(emof)
    assert set(occ["eventID"]) <= set(core_ids) and set(emof["eventID"]) <= set(core_ids)
    return ev, occ, emof


def obis_problems(ev: pd.DataFrame, occ: pd.DataFrame, emof: pd.DataFrame) -> list[dict]:
    """pyobistools' findings on the three tables: [] when OBIS QC passes."""
    found = []
    for result in (
        check_fields(ev, analysis_type="event_core"),
        check_fields(occ, analysis_type="occurrence_extension"),
        check_extension_eventids(ev, occ),
        check_extension_eventids(ev, emof),
        check_occurrence_core_and_extension(occ),
    ):
        found += result.to_dict("records")
    return found
