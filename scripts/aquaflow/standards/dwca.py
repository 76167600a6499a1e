"""Darwin Core Archive for OBIS/EMODnet/GBIF: Event core + Occurrence + ExtendedMeasurementOrFact.

Layout and vocabulary follow OBIS-ENV-DATA and the imaging recommendations of Martin-Cabrera et
al. 2022 (see README, "Publishing to OBIS"):

- one **event** per sample (the campaign's sample table: eventID, eventDate, position, depth, volume);
- one **occurrence** per (event, taxon, verification status): `basisOfRecord=MachineObservation`,
  `identificationVerificationStatus` `PredictedByMachine` or `ValidatedByHuman`, WoRMS LSIDs in
  `scientificNameID`, model and software in `identificationReferences`;
- **eMoF** rows per occurrence: the object count, and when the sample volume is known the abundance
  per m³, and when object areas and the pixel size are known the ESD-sphere biovolume per m³; for
  masks (instance segmentation) the cover: the taxon's mask pixels over the pixels of every image of
  the sample, in percent (P01 SDBIOL10, as OBIS's benthic cover examples); per event: the volume
  imaged and the instrument. Types and units are NERC vocabulary URIs.

The objects are the task's (aquaflow.tasks.objects): a classifier's predicted items, a
detector's detections (then the predicted images, zero-detection ones included, make the events),
or a semantic model's classes per raster (then every predicted raster makes an event, and a taxon
gets its cover of the sample's classified pixels and no count: pixels are not individuals).

Labels that are not taxa (taxonomy status `not_a_taxon`) never become occurrences; a label whose
AphiaID is not verified stops the export (`unverified: error`, the default) unless the use case
opts in to leaving it out (`exclude`) or publishing it without scientificNameID (`include`). Left-out
labels are listed in the report with their object counts.
"""

from __future__ import annotations

import datetime as dt
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import pandas as pd

from aquaflow import __version__
from aquaflow.io import atomic_path, write_json
from aquaflow.standards.taxonomy import (
    LSID_RE,
    Taxon,
    check_labels,
    read_table,
    split_status,
)
from aquaflow.tasks.objects import export_images, export_objects, object_kind

DWC = "http://rs.tdwg.org/dwc/terms/"
OBIS = "http://rs.iobis.org/obis/terms/"
NVS = "http://vocab.nerc.ac.uk/collection/"
ROW_EVENT = DWC + "Event"
ROW_OCCURRENCE = DWC + "Occurrence"
ROW_EMOF = OBIS + "ExtendedMeasurementOrFact"

EVENT_TERMS = [
    "eventID",
    "parentEventID",
    "eventType",
    "eventDate",
    "decimalLatitude",
    "decimalLongitude",
    "geodeticDatum",
    "coordinateUncertaintyInMeters",
    "countryCode",
    "locality",
    "minimumDepthInMeters",
    "maximumDepthInMeters",
    "samplingProtocol",
    "sampleSizeValue",
    "sampleSizeUnit",
    "eventRemarks",
]
OCCURRENCE_TERMS = [
    "eventID",
    "occurrenceID",
    "basisOfRecord",
    "occurrenceStatus",
    "scientificName",
    "scientificNameID",
    "taxonRank",
    "kingdom",
    "verbatimIdentification",
    "identifiedBy",
    "identificationVerificationStatus",
    "identificationReferences",
    "identificationRemarks",
    "associatedMedia",
]
EMOF_TERMS = [
    "eventID",
    "occurrenceID",
    "measurementID",
    "measurementType",
    "measurementTypeID",
    "measurementValue",
    "measurementValueID",
    "measurementUnit",
    "measurementUnitID",
    "measurementMethod",
    "measurementRemarks",
]
OBIS_TERMS = {"measurementTypeID", "measurementValueID", "measurementUnitID"}
FILES = {ROW_EVENT: "event.txt", ROW_OCCURRENCE: "occurrence.txt", ROW_EMOF: "extendedmeasurementorfact.txt"}

# eMoF vocabulary (NERC P01 types, P06 units, L22 instruments), as EcoTaxa's exporter and OBIS use them.
COUNT = ("Count (in assayed sample) of biological entity specified elsewhere", f"{NVS}P01/current/OCOUNT01/")
ABUNDANCE = (
    "Abundance of biological entity specified elsewhere per unit volume of the water body",
    f"{NVS}P01/current/SDBIOL01/",
)
BIOVOLUME = (
    "Biovolume of biological entity specified elsewhere per unit volume of the water body",
    f"{NVS}P01/current/CVOLUKNB/",
)
VOLUME = ("Volume sampled of the water body", f"{NVS}P01/current/VOLWBSMP/")
COVER = (
    "Coverage (in assayed sample) of biological entity specified elsewhere",
    f"{NVS}P01/current/SDBIOL10/",
)
INSTRUMENT = ("Name of analytical instrument", f"{NVS}P01/current/NMANINST/")
SAMPLING_DEVICE = ("Name of sampling instrument", f"{NVS}P01/current/NMSPINST/")
UNITS = {
    "dimensionless": ("Dimensionless", f"{NVS}P06/current/UUUU/"),
    "per_m3": ("Number per cubic metre", f"{NVS}P06/current/UPMM/"),
    "mm3_per_m3": ("Cubic millimetres per cubic metre", f"{NVS}P06/current/CMCM/"),
    "m3": ("Cubic metres", f"{NVS}P06/current/MCUB/"),
    "na": ("Not applicable", f"{NVS}P06/current/XXXX/"),
    "percent": ("Percent", f"{NVS}P06/current/UPCT/"),
}
L22 = {
    "flowcam": f"{NVS}L22/current/TOOL1583/",
    "ifcb": f"{NVS}L22/current/TOOL1588/",
    "zooscan": f"{NVS}L22/current/TOOL1581/",
    "uvp6": f"{NVS}L22/current/TOOL1578/",
    "planktoscope": f"{NVS}L22/current/TOOL1579/",
}
MEASUREMENT_CODES = {
    COUNT[1]: "count",
    ABUNDANCE[1]: "abundance",
    BIOVOLUME[1]: "biovolume",
    VOLUME[1]: "volume",
    COVER[1]: "cover",
    INSTRUMENT[1]: "instrument",
    SAMPLING_DEVICE[1]: "sampling_device",
}
MEASUREMENT_TYPE_IDS = set(MEASUREMENT_CODES)
VERIFICATION = {"P": "PredictedByMachine", "V": "ValidatedByHuman"}
OCCURRENCE_STATUS = ("present", "detected")
ABSENT = {"present": "absent", "detected": "notDetected"}  # the matching absence vocabulary
VOLUME_UNITS_M3 = {"ml": 1e-6, "millilitre": 1e-6, "l": 1e-3, "litre": 1e-3, "m3": 1.0, "cubic metre": 1.0}
_ISO_DATE = re.compile(
    r"^\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?)?)?"
    r"(/\d{4}(-\d{2}(-\d{2}(T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)?)?)?)?$"
)


# how the objects were identified and their cover measured, by task kind (Settings.kind); `count`
# None: no count is published
INSTANCE_COVER = (
    "sum of the {n} instance masks' pixels ({masks:.0f}) / pixels of every image of the sample "
    "({imaged:.0f}) x 100; overlaps between masks count twice"
)
WORDING = {
    "classify": {
        "remark": "top-1 label of an image classifier",
        "count": "objects classified in the imaged volume",
        "method": "were classified by a machine-learning model",
        "cover": INSTANCE_COVER,
    },
    "detect": {
        "remark": "class of a detection by an object detector",
        "count": "objects detected in the sample's images",
        "method": "were detected, located and classified by an object detector",
        "cover": INSTANCE_COVER,
    },
    "semantic": {
        "remark": "pixel class of a semantic segmentation model",
        "count": None,  # pixels, not individuals: the cover only
        "method": "were classified pixel by pixel by a semantic segmentation model",
        "cover": "pixels classified as this class in the sample's {n} raster(s) ({masks:.0f}) / pixels "
        "classified in every raster of the sample ({imaged:.0f}, nodata excluded) x 100",
    },
}
MASK_AREA = "mask_area_px"  # the object column whose presence means masks: cover per taxon


class DwcaError(ValueError):
    """Bad sample table, settings or predictions for a DwC-A; the message names the file/key."""


@dataclass
class Settings:
    """The `export.dwca` config keys plus what the rule knows (see config/README.md)."""

    occurrence_status: str = "present"
    unverified: str = "error"  # error | exclude | include
    min_score: float = 0.0
    validated_column: str | None = None
    identified_by: str = ""
    area_column: str = "area_px"
    pixel_size_mm: float | None = None
    instrument: str = "unknown"
    sample_column: str = "sample_id"
    default_sample: str = ""
    references: str = ""
    taxonomy_path: str = "taxonomy table"
    kind: str = "classify"  # classify | detect | semantic: what an object is (WORDING; semantic: cover only)
    absences: bool = False  # an absence per sample for each of the model's taxa it did not see
    classes: list[str] = field(default_factory=list)  # the model's labels (for absences)
    sampling_device: dict[str, str] = field(default_factory=dict)  # name, value_id (NERC L22/L05)
    eml: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], **extra: Any) -> Settings:
        keys = {
            "occurrence_status",
            "unverified",
            "min_score",
            "validated_column",
            "identified_by",
            "area_column",
            "pixel_size_mm",
            "absences",
            "sampling_device",
            "eml",
        }
        return cls(**{k: v for k, v in cfg.items() if k in keys}, **extra)


# --- the sample (event) table -----------------------------------------------------------------------


def copy_samples(path: str | Path, dest: str | Path) -> None:
    """The samples table as CSV at `dest`, cell for cell (a TSV converted): the copy jobs without
    a shared file system read from storage."""
    path = Path(path)
    sep = "\t" if path.suffix in (".tsv", ".txt") else ","
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False)
    with atomic_path(dest) as tmp:
        table.to_csv(tmp, index=False)


def read_samples(path: str | Path) -> pd.DataFrame:
    """A campaign's sample table (CSV or TSV): one row per sample, DwC Event terms as columns.

    Required: eventID, eventDate (ISO 8601), decimalLatitude, decimalLongitude. Optional: the other
    EVENT_TERMS; sampleSizeValue + sampleSizeUnit (mL, L or m3) is the volume the objects come from.
    """
    path = Path(path)
    if not path.is_file():
        raise DwcaError(f"sample table {path} does not exist (campaign key samples.path)")
    df = pd.read_csv(
        path, sep="\t" if path.suffix in (".tsv", ".txt") else ",", dtype=str, keep_default_na=False
    )
    df.columns = [c.strip() for c in df.columns]
    unknown = [c for c in df.columns if c not in EVENT_TERMS]
    if unknown:
        raise DwcaError(f"{path}: unknown column(s) {unknown}; allowed: {EVENT_TERMS}")
    missing = [c for c in ("eventID", "eventDate", "decimalLatitude", "decimalLongitude") if c not in df]
    if missing:
        raise DwcaError(f"{path}: missing required column(s) {missing}")
    for col in df.columns:
        df[col] = df[col].str.strip()
    if (df["eventID"] == "").any() or df["eventID"].duplicated().any():
        raise DwcaError(f"{path}: eventID must be filled and unique")
    for i, row in df.iterrows():
        where = f"{path} row {i + 2} ({row['eventID']})"
        if not _ISO_DATE.match(row["eventDate"]):
            raise DwcaError(
                f"{where}: eventDate {row['eventDate']!r} is not ISO 8601 (e.g. 2024-05-08T20:50:00Z)"
            )
        for col, lim in (("decimalLatitude", 90), ("decimalLongitude", 180)):
            v = _number(row[col], f"{where}: {col}")
            if v is None or not -lim <= v <= lim:
                raise DwcaError(f"{where}: {col} {row[col]!r} must be a number in [-{lim}, {lim}]")
        if row.get("sampleSizeValue"):
            _number(row["sampleSizeValue"], f"{where}: sampleSizeValue")
            if (row.get("sampleSizeUnit") or "").lower() not in VOLUME_UNITS_M3:
                unit = row.get("sampleSizeUnit")
                raise DwcaError(f"{where}: sampleSizeUnit {unit!r} must be one of {sorted(VOLUME_UNITS_M3)}")
    check_hierarchy(df, path)
    if "geodeticDatum" not in df:
        df["geodeticDatum"] = "EPSG:4326"
    return df.reset_index(drop=True)


def check_hierarchy(df: pd.DataFrame, path: str | Path) -> None:
    """parentEventID (cruise -> station visit -> sample, any depth) names rows of the same table,
    without cycles."""
    if "parentEventID" not in df:
        return
    parent = dict(zip(df["eventID"], df["parentEventID"], strict=True))
    unknown = sorted({p for p in parent.values() if p and p not in parent})
    if unknown:
        raise DwcaError(f"{path}: parentEventID {unknown[:5]} not an eventID of the table")
    for ev in parent:
        seen = {ev}
        while parent.get(ev):
            ev = parent[ev]
            if ev in seen:
                raise DwcaError(f"{path}: parentEventID cycle through {ev!r}")
            seen.add(ev)


def with_ancestors(samples: pd.DataFrame, events: set[str]) -> pd.DataFrame:
    """The sample-table rows of `events` and of their parents up the hierarchy, parents first."""
    parent = dict(
        zip(samples["eventID"], samples.get("parentEventID", pd.Series("", index=samples.index)), strict=True)
    )
    depth: dict[str, int] = {}
    for ev in events:
        chain = [ev]
        while parent.get(chain[-1]):
            chain.append(parent[chain[-1]])
        for d, e in enumerate(reversed(chain)):
            depth[e] = d
    rows = samples[samples["eventID"].isin(depth)].copy()
    rows["_depth"] = rows["eventID"].map(depth)
    return rows.sort_values("_depth", kind="stable").drop(columns="_depth")  # table order within a level


def _number(text: str, where: str) -> float | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        raise DwcaError(f"{where} {text!r} is not a number") from None


def volume_m3(row: pd.Series) -> float | None:
    value = row.get("sampleSizeValue") or ""
    if not value:
        return None
    return float(value) * VOLUME_UNITS_M3[str(row["sampleSizeUnit"]).lower()]


# --- objects -> occurrences -------------------------------------------------------------------------


def object_table(preds: pd.DataFrame, s: Settings) -> pd.DataFrame:
    """One row per predicted object: eventID, label, status code (P/V), score, biovolume (mm³ or NaN)."""
    if s.sample_column in preds:
        event = preds[s.sample_column].astype(str)
    elif s.default_sample:
        event = pd.Series(s.default_sample, index=preds.index)
    else:
        raise DwcaError(
            f"predictions have no column {s.sample_column!r} and the campaign has no metadata.sample_id"
        )
    label = preds["top1_label"].astype(str)
    status = pd.Series("P", index=preds.index)
    if s.validated_column:
        if s.validated_column not in preds:
            raise DwcaError(
                f"export.dwca.validated_column: predictions have no column {s.validated_column!r}"
            )
        human = preds[s.validated_column].fillna("").astype(str).str.strip()
        status = status.where(human == "", "V")
        label = label.where(human == "", human)
    return pd.DataFrame(
        {
            "eventID": event.to_numpy(),
            "label": label.to_numpy(),
            "status": status.to_numpy(),
            "score": preds["top1_prob"].astype(float).to_numpy(),
            "biovolume_mm3": biovolumes(preds, s),
            "mask_area_px": preds[MASK_AREA].astype(float).to_numpy() if MASK_AREA in preds else np.nan,
        }
    )


def biovolumes(preds: pd.DataFrame, s: Settings) -> np.ndarray:
    """ESD-sphere biovolume per object (mm³): V = 4/3 π (√(A/π))³ with A the area in mm²; NaN where
    the area (in pixels, `area_column`) or the pixel size (setting, or the column
    process_particle_pixel_size_mm) is unknown."""
    if s.area_column not in preds:
        return np.full(len(preds), np.nan)
    if s.pixel_size_mm:
        px = np.full(len(preds), float(s.pixel_size_mm))
    elif "process_particle_pixel_size_mm" in preds:
        px = pd.to_numeric(preds["process_particle_pixel_size_mm"], errors="coerce").to_numpy(float)
    else:
        return np.full(len(preds), np.nan)
    area_mm2 = pd.to_numeric(preds[s.area_column], errors="coerce").to_numpy(float) * px**2
    return 4.0 / 3.0 * np.pi * np.sqrt(area_mm2 / np.pi) ** 3


def _slug(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", text).strip("_")


def occurrence_key(taxon: Taxon) -> str:
    return str(taxon.aphia_id) if taxon.lsid else _slug(taxon.scientific_name)


@dataclass
class Tables:
    event: pd.DataFrame
    occurrence: pd.DataFrame
    emof: pd.DataFrame
    report: dict[str, Any]


def build(
    preds: pd.DataFrame,
    samples: pd.DataFrame,
    taxa_table: dict[str, Taxon],
    s: Settings,
    images: pd.DataFrame | None = None,
) -> Tables:
    """Event, Occurrence and eMoF tables plus a report (kept/excluded labels with object counts).

    `images` (detection campaigns): every predicted image's `sample` and `area_px`; their samples are
    events even without objects, and their pixels are what a taxon's mask cover is measured against."""
    if s.occurrence_status not in OCCURRENCE_STATUS:
        raise DwcaError(f"export.dwca.occurrence_status {s.occurrence_status!r} not in {OCCURRENCE_STATUS}")
    objs = object_table(preds, s)
    imaged = None if images is None else images.groupby(images["sample"].astype(str))["area_px"].sum()
    imaged_events = set() if imaged is None else set(imaged.index)
    unknown = sorted((set(objs["eventID"]) | imaged_events) - set(samples["eventID"]))
    if unknown:
        raise DwcaError(f"objects of sample(s) {unknown[:10]} have no row in the sample table (eventID)")
    taxa = check_labels(objs["label"], taxa_table, s.unverified, s.taxonomy_path)
    objs["keep"] = objs["score"] >= s.min_score
    objs.loc[objs["status"] == "V", "keep"] = True
    allowed = allowed_labels(taxa, s)
    counts = objs.groupby("label").size().to_dict()
    report: dict[str, Any] = {
        "objects": len(objs),
        "labels": {lb: {"status": t.status, "objects": int(counts.get(lb, 0))} for lb, t in taxa.items()},
        # what this table never publishes, whether or not the campaign has such objects
        "excluded_not_a_taxon": split_status(taxa_table)["not_a_taxon"],
        "excluded_unverified": [] if s.unverified == "include" else split_status(taxa_table)["unverified"],
        "below_min_score": int((~objs["keep"]).sum()),
        "min_score": s.min_score,
    }
    objs = objs[objs["keep"] & objs["label"].isin(allowed)].copy()
    objs["taxon_key"] = [occurrence_key(taxa[lb]) for lb in objs["label"]]
    leaves = set(objs["eventID"]) | set(preds_events(preds, s)) | imaged_events
    used = with_ancestors(samples, leaves)
    cover_of = imaged if imaged is not None and MASK_AREA in preds else None
    event = used.reindex(columns=[c for c in EVENT_TERMS if c in samples.columns]).reset_index(drop=True)
    occ_rows, emof_rows = [], []
    vol = {r["eventID"]: volume_m3(r) for _, r in used.iterrows()}
    seen: set[tuple[str, str]] = set()
    for (ev, key, status), grp in objs.groupby(["eventID", "taxon_key", "status"], sort=True):
        labels = sorted(set(grp["label"]))
        taxon = taxa[labels[0]]
        occ_id = f"{ev}_{status}_{key}"
        occ_rows.append(_occurrence(ev, occ_id, status, taxon, labels, s))
        seen.add((ev, key))
        emof_rows += _occurrence_measurements(ev, occ_id, grp, vol[ev], s)
        if cover_of is not None:
            emof_rows.append(_cover(ev, occ_id, grp, float(cover_of.get(ev, 0.0)), s.kind))
    if s.absences:
        absent = absences(sorted(leaves), s.classes, taxa_table, allowed_labels(taxa_table, s), seen, s)
        occ_rows += absent[0]
        emof_rows += absent[1]
    for ev in event["eventID"]:
        if ev in leaves:  # the samples themselves (not cruises or stations above them)
            emof_rows += _event_measurements(ev, vol[ev], s.instrument, s.sampling_device)
    occurrence = pd.DataFrame(occ_rows, columns=OCCURRENCE_TERMS)
    emof = pd.DataFrame(emof_rows, columns=EMOF_TERMS)
    emof["measurementID"] = [
        f"{o or e}_{MEASUREMENT_CODES[t]}"
        for e, o, t in zip(emof["eventID"], emof["occurrenceID"], emof["measurementTypeID"], strict=True)
    ]
    report.update(events=len(event), occurrences=len(occurrence), emof_rows=len(emof))
    report["objects_in_occurrences"] = len(objs)
    return Tables(event, occurrence, emof, report)


def allowed_labels(taxa: dict[str, Taxon], s: Settings) -> set[str]:
    """Labels that become occurrences: taxa with a verified AphiaID (or any, with `include`)."""
    return {lb for lb, t in taxa.items() if t.is_taxon and (t.lsid or s.unverified == "include")}


def absences(
    events: list[str],
    classes: list[str],
    table: dict[str, Taxon],
    allowed: set[str],
    seen: set[tuple[str, str]],
    s: Settings,
) -> tuple[list[dict], list[dict]]:
    """An absence occurrence (count 0) per sample and model taxon with no object in that sample."""
    occ, emof = [], []
    taxa = {}
    for lb in classes:
        if lb in allowed and lb in table:
            taxa.setdefault(occurrence_key(table[lb]), []).append(lb)
    for ev in events:
        for key, labels in sorted(taxa.items()):
            if (ev, key) in seen:
                continue
            occ_id = f"{ev}_A_{key}"
            row = _occurrence(ev, occ_id, "P", table[labels[0]], labels, s)
            row["occurrenceStatus"] = ABSENT[s.occurrence_status]
            row["identificationRemarks"] = (
                f"no object of this class in the sample ({WORDING[s.kind]['remark']}); "
                "a classifier's non-detection is weak evidence of absence"
            )
            occ.append(row)
            if WORDING[s.kind]["count"] is None:
                emof.append(_mof(ev, occ_id, COVER, "0", "percent", "no pixel of this class in the sample"))
            else:
                emof.append(_mof(ev, occ_id, COUNT, 0, "dimensionless", WORDING[s.kind]["count"]))
    return occ, emof


def preds_events(preds: pd.DataFrame, s: Settings) -> list[str]:
    if s.sample_column in preds:
        return sorted(set(preds[s.sample_column].astype(str)))
    return [s.default_sample] if s.default_sample else []


def _occurrence(ev: str, occ_id: str, status: str, taxon: Taxon, labels: list[str], s: Settings) -> dict:
    if status == "P":
        remarks = f"{WORDING[s.kind]['remark']}; score threshold {s.min_score:g}; not validated by a human"
    else:
        remarks = "machine prediction checked by a human"
    if not taxon.lsid:
        remarks += "; AphiaID not verified in WoRMS"
    return {
        "eventID": ev,
        "occurrenceID": occ_id,
        "basisOfRecord": "MachineObservation",
        "occurrenceStatus": s.occurrence_status,
        "scientificName": taxon.scientific_name,
        "scientificNameID": taxon.lsid,
        "taxonRank": taxon.rank,
        "kingdom": taxon.kingdom,
        "verbatimIdentification": " | ".join(labels),
        "identifiedBy": s.identified_by if status == "V" else "",
        "identificationVerificationStatus": VERIFICATION[status],
        "identificationReferences": s.references,
        "identificationRemarks": remarks,
        "associatedMedia": "",
    }


def _mof(
    ev: str, occ: str, what: tuple[str, str], value: Any, unit: str, method: str = "", **kw: str
) -> dict:
    name, unit_id = UNITS[unit]
    return {
        "eventID": ev,
        "occurrenceID": occ,
        "measurementType": what[0],
        "measurementTypeID": what[1],
        "measurementValue": value,
        "measurementValueID": kw.get("value_id", ""),
        "measurementUnit": name,
        "measurementUnitID": unit_id,
        "measurementMethod": method,
        "measurementRemarks": kw.get("remarks", ""),
    }


def _occurrence_measurements(
    ev: str, occ: str, grp: pd.DataFrame, vol: float | None, s: Settings
) -> list[dict]:
    n = len(grp)
    if WORDING[s.kind]["count"] is None:  # pixel classes: the cover is the measurement
        return []
    rows = [_mof(ev, occ, COUNT, n, "dimensionless", WORDING[s.kind]["count"])]
    if vol:
        rows.append(_mof(ev, occ, ABUNDANCE, _fmt(n / vol), "per_m3", f"{n} objects / {vol:g} m3 imaged"))
        bv = grp["biovolume_mm3"].to_numpy(float)
        if len(bv) and not np.isnan(bv).any():
            rows.append(
                _mof(
                    ev,
                    occ,
                    BIOVOLUME,
                    _fmt(bv.sum() / vol),
                    "mm3_per_m3",
                    "sum of ESD-sphere biovolumes (area in pixels x pixel size) / volume imaged",
                )
            )
    return rows


def _cover(ev: str, occ: str, grp: pd.DataFrame, imaged_px: float, kind: str) -> dict:
    """The taxon's cover of the sample's images: its mask pixels / all pixels imaged, in percent."""
    masks = float(grp["mask_area_px"].sum())
    cover = 100.0 * masks / imaged_px if imaged_px > 0 else 0.0
    method = WORDING[kind]["cover"].format(n=len(grp), masks=masks, imaged=imaged_px)
    return _mof(ev, occ, COVER, _fmt(cover), "percent", method)


def _event_measurements(
    ev: str, vol: float | None, instrument: str, device: dict[str, str] | None = None
) -> list[dict]:
    rows = []
    if device and device.get("name"):
        rows.append(_mof(ev, "", SAMPLING_DEVICE, device["name"], "na", value_id=device.get("value_id", "")))
    if vol:
        rows.append(_mof(ev, "", VOLUME, _fmt(vol), "m3", "volume imaged (sampleSizeValue)"))
    value_id = L22.get(instrument.lower().replace(" ", ""), "")
    if instrument and instrument != "unknown":
        rows.append(_mof(ev, "", INSTRUMENT, instrument, "na", value_id=value_id))
    return rows


def _fmt(x: float) -> str:
    return f"{x:.6g}"


# --- files ------------------------------------------------------------------------------------------


def meta_xml(tables: Tables) -> str:
    def block(tag: str, row_type: str, df: pd.DataFrame, id_tag: str) -> str:
        fields = "\n".join(
            f'    <field index="{i}" term="{(OBIS if c in OBIS_TERMS else DWC) + c}"/>'
            for i, c in enumerate(df.columns)
        )
        return (
            f'  <{tag} encoding="UTF-8" fieldsTerminatedBy="\\t" linesTerminatedBy="\\n" fieldsEnclosedBy=""'
            f' ignoreHeaderLines="1" rowType="{row_type}">\n'
            f"    <files><location>{FILES[row_type]}</location></files>\n"
            f'    <{id_tag} index="0"/>\n{fields}\n  </{tag}>\n'
        )

    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<archive xmlns="http://rs.tdwg.org/dwc/text/" metadata="eml.xml">\n'
        + block("core", ROW_EVENT, tables.event, "id")
        + block("extension", ROW_OCCURRENCE, tables.occurrence, "coreid")
        + block("extension", ROW_EMOF, tables.emof, "coreid")
        + "</archive>\n"
    )


def eml_xml(tables: Tables, eml: dict[str, Any], package_id: str, methods: str) -> str:
    """Minimal EML 2.1.1 dataset metadata (title, creator, contact, abstract, licence, coverage, methods)."""
    e = {k: escape(str(v)) for k, v in eml.items() if v is not None}
    ev = tables.event
    lat = pd.to_numeric(ev["decimalLatitude"]).astype(float)
    lon = pd.to_numeric(ev["decimalLongitude"]).astype(float)
    dates = sorted(d.split("/")[0][:10] for d in ev["eventDate"])
    party = (
        f"<individualName><surName>{e.get('creator') or 'unknown'}</surName></individualName>"
        f"<organizationName>{e.get('organization', '')}</organizationName>"
        f"<electronicMailAddress>{e.get('email', '')}</electronicMailAddress>"
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<eml:eml xmlns:eml="eml://ecoinformatics.org/eml-2.1.1" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
  xsi:schemaLocation="eml://ecoinformatics.org/eml-2.1.1 http://rs.gbif.org/schema/eml-gbif-profile/1.1/eml.xsd"
  packageId="{escape(package_id)}" system="aquaflow" scope="system" xml:lang="en">
  <dataset>
    <title xml:lang="en">{e.get("title", "")}</title>
    <creator>{party}</creator>
    <metadataProvider>{party}</metadataProvider>
    <pubDate>{dt.date.today().isoformat()}</pubDate>
    <language>en</language>
    <abstract><para>{e.get("abstract", "")}</para></abstract>
    <intellectualRights><para>{e.get("license", "")}</para></intellectualRights>
    <coverage>
      <geographicCoverage>
        <geographicDescription>bounding box of the events</geographicDescription>
        <boundingCoordinates>
          <westBoundingCoordinate>{lon.min():.6f}</westBoundingCoordinate>
          <eastBoundingCoordinate>{lon.max():.6f}</eastBoundingCoordinate>
          <northBoundingCoordinate>{lat.max():.6f}</northBoundingCoordinate>
          <southBoundingCoordinate>{lat.min():.6f}</southBoundingCoordinate>
        </boundingCoordinates>
      </geographicCoverage>
      <temporalCoverage><rangeOfDates>
        <beginDate><calendarDate>{dates[0]}</calendarDate></beginDate>
        <endDate><calendarDate>{dates[-1]}</calendarDate></endDate>
      </rangeOfDates></temporalCoverage>
    </coverage>
    <contact>{party}</contact>
    <methods><methodStep><description><para>{escape(methods)}</para></description></methodStep></methods>
  </dataset>
</eml:eml>
"""


def _tsv(df: pd.DataFrame) -> bytes:
    for col in df.columns:
        if df[col].astype(str).str.contains(r"[\t\n\r]").any():
            raise DwcaError(f"column {col} holds a tab or newline; fix the source value")
    return df.to_csv(sep="\t", index=False, lineterminator="\n").encode("utf-8")


def write_archive(tables: Tables, out: str | Path, eml: str) -> None:
    """The zip OBIS/GBIF/IPT read: meta.xml, eml.xml and the three tables."""
    with atomic_path(out) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("meta.xml", meta_xml(tables))
        zf.writestr("eml.xml", eml)
        zf.writestr(FILES[ROW_EVENT], _tsv(tables.event))
        zf.writestr(FILES[ROW_OCCURRENCE], _tsv(tables.occurrence))
        zf.writestr(FILES[ROW_EMOF], _tsv(tables.emof))


# --- our own checks (beyond the XSD, python-dwca-reader and pyobistools) ---------------------------


def check(tables: Tables) -> list[str]:
    """Problems that would make OBIS reject or misread the archive; [] when none."""
    p: list[str] = []
    occ, emof, ev = tables.occurrence, tables.emof, tables.event
    if not ev["eventID"].is_unique:
        p.append("eventID not unique")
    if not occ["occurrenceID"].is_unique:
        p.append("occurrenceID not unique")
    if not set(occ["eventID"]) <= set(ev["eventID"]) or not set(emof["eventID"]) <= set(ev["eventID"]):
        p.append("an extension row names an eventID missing from the core")
    if not set(emof["occurrenceID"].replace("", np.nan).dropna()) <= set(occ["occurrenceID"]):
        p.append("an eMoF row names an occurrenceID missing from the occurrences")
    bad_lsid = [x for x in occ["scientificNameID"] if x and not LSID_RE.match(x)]
    if bad_lsid:
        p.append(f"scientificNameID not a WoRMS LSID: {bad_lsid[:3]}")
    if not occ["basisOfRecord"].eq("MachineObservation").all():
        p.append("basisOfRecord must be MachineObservation")
    if not occ["identificationVerificationStatus"].isin(VERIFICATION.values()).all():
        p.append(f"identificationVerificationStatus outside {sorted(VERIFICATION.values())}")
    statuses = (*OCCURRENCE_STATUS, *ABSENT.values())
    if not occ["occurrenceStatus"].isin(statuses).all():
        p.append(f"occurrenceStatus outside {statuses}")
    if "parentEventID" in ev and not set(ev["parentEventID"].replace("", np.nan).dropna()) <= set(
        ev["eventID"]
    ):
        p.append("a parentEventID names no event of the archive")
    if not emof["measurementTypeID"].isin(MEASUREMENT_TYPE_IDS).all():
        p.append("measurementTypeID outside the NERC P01 codes this exporter knows")
    if (emof["measurementUnit"] == "").any() or (emof["measurementUnitID"] == "").any():
        p.append("an eMoF row has no unit")
    if not ev["eventDate"].map(lambda d: bool(_ISO_DATE.match(d))).all():
        p.append("eventDate not ISO 8601")
    if (occ["scientificName"] == "").any():
        p.append("an occurrence has no scientificName")
    return p


# --- the step ---------------------------------------------------------------------------------------


def references(card: dict[str, Any] | None, preds: pd.DataFrame) -> str:
    """identificationReferences: model id (weights sha256), architecture, MLflow run, software, run."""
    parts = []
    if card:
        parts.append(
            f"model: sha256 {card.get('id', '')} ({card.get('arch', '')}, {card.get('backend', 'torch')})"
        )
        run = (card.get("mlflow") or {}).get("run_id")
        if run:
            parts.append(f"MLflow run {run}")
    elif "model_id" in preds and len(preds):
        parts.append(f"model: sha256 {preds['model_id'].iloc[0]}")
    parts.append(f"software: aquaflow {__version__}")
    if "run_id" in preds and len(preds):
        parts.append(f"inference run {preds['run_id'].iloc[0]}")
    return " | ".join(parts)


def export(
    *,
    predictions: str | Path,
    samples: str | Path,
    taxonomy: str | Path,
    out: str | Path,
    report: str | Path,
    cfg: dict[str, Any],
    instrument: str,
    sample_column: str,
    default_sample: str,
    package_id: str,
    card: dict[str, Any] | None = None,
    objects: dict[str, Any] | None = None,
    counts: str | Path | None = None,
) -> Tables:
    """The export_dwca step: predictions + sample table + taxonomy table -> DwC-A zip + report json.

    `objects`: the task's rows (aquaflow.tasks.objects; absent = classification); `counts`: a
    detection campaign's counts.parquet (every predicted image, for events and cover)."""
    preds = export_objects(pd.read_parquet(predictions), objects)
    s = Settings.from_config(
        cfg,
        instrument=instrument,
        sample_column=sample_column,
        default_sample=default_sample,
        taxonomy_path=str(taxonomy),
        kind=object_kind(objects),
        classes=list((card or {}).get("classes") or []),
    )
    s.references = references(card, preds)
    images = export_images(pd.read_parquet(counts), objects) if counts and objects else None
    tables = build(preds, read_samples(samples), read_table(taxonomy), s, images)
    problems = check(tables)
    if problems:
        raise DwcaError(f"DwC-A for {package_id} fails checks: {problems}")
    eml = {**s.eml, "title": s.eml.get("title") or package_id}
    methods = (
        f"Objects imaged with {instrument} {WORDING[s.kind]['method']} ({s.references}). "
        f"One occurrence per sample, taxon and verification status; counts, abundance, biovolume and "
        f"cover in the ExtendedMeasurementOrFact extension."
    )
    write_archive(tables, out, eml_xml(tables, eml, package_id, methods))
    write_json({**tables.report, "package_id": package_id, "checks": "passed"}, report)
    return tables
