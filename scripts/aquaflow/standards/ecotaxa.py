"""EcoTaxa import TSV: header row, [t]/[f] type row, one object per predicted item (+ images zip)."""

from __future__ import annotations

import functools
import io
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from aquaflow.data import imaging
from aquaflow.io import atomic_path
from aquaflow.tasks.objects import export_objects

PREFIXES = ("img_", "object_", "sample_", "acq_", "process_")
KNOWN_TEXT = {
    "img_file_name",
    "object_id",
    "object_annotation_category",
    "object_annotation_status",
    "object_date",
    "object_time",
    "object_link",
    "sample_id",
    "acq_id",
    "process_id",
    "acq_instrument",
}
ECOTAXA_IMAGE_FORMATS = {".jpg", ".jpeg", ".png", ".gif"}


def ecotaxa_name(column: str) -> str:
    """Metadata column -> EcoTaxa column: keep known prefixes, else put it under object_."""
    col = re.sub(r"[^0-9a-z_]+", "_", column.lower()).strip("_")
    return col if col.startswith(PREFIXES) else f"object_{col}"


# ZooProcess writes sizes in pixels (areas in px²) with the pixel size in process_particle_pixel_size_mm;
# our segmentation measures in mm. Lengths divide by the pixel size, areas by its square.
ZOOPROCESS_LENGTHS = (
    "object_x",
    "object_y",
    "object_bx",
    "object_by",
    "object_width",
    "object_height",
    "object_major",
    "object_minor",
    "object_perim",
    "object_feret",
    "object_esd",
)
ZOOPROCESS_NAMES = {"object_perim": "object_perim.", "object_circ": "object_circ."}


def image_name(row_id: str, source: str, cropped: bool, folder: str = "images/") -> str:
    ext = Path(source).suffix.lower()
    return f"{folder}{row_id}{ext if not cropped and ext in ECOTAXA_IMAGE_FORMATS else '.png'}"


def _safe(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", str(text)).strip("_")


def object_ids(preds: pd.DataFrame, sample_id: str) -> np.ndarray:
    """Unique ids, stable across reruns of the same inputs: the object's own name where the
    instrument gives one (ZooScan `<scan_id>_<item>` in object_name; FlowCam `<sample>_<particle id>`),
    else `<sample>_<row number>`. Never the content hash: identical crops (the same particle
    imaged twice, blank frames) are distinct objects."""
    fallback = np.array([f"{_safe(sample_id)}_{int(q) + 1:06d}" for q in preds["seq"]], dtype=object)
    if "object_name" in preds:
        ids = preds["object_name"].astype(str).map(_safe).to_numpy(dtype=object)
    elif "particle_id" in preds:
        ids = np.array([f"{_safe(sample_id)}_{_safe(p)}" for p in preds["particle_id"]], dtype=object)
    else:
        return fallback
    return ids if pd.Series(ids).is_unique else fallback


def zooprocess_units(out: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    """ZooProcess feature units and names: lengths in px, area in px², `object_perim.`, `object_circ.`."""
    if "process_particle_pixel_size_mm" not in preds:
        raise ValueError("export.ecotaxa.convention zooprocess needs process_particle_pixel_size_mm")
    px = pd.to_numeric(preds["process_particle_pixel_size_mm"]).to_numpy(float)
    for col in ZOOPROCESS_LENGTHS:
        if col in out:
            out[col] = (out[col].astype(float) / px).round(3)
    if "object_area" in out:
        out["object_area"] = preds["area_px"].to_numpy() if "area_px" in preds else out["object_area"] / px**2
    out = out.drop(columns=[c for c in ("object_area_px",) if c in out])
    return out.rename(columns=ZOOPROCESS_NAMES)


def table(
    preds: pd.DataFrame,
    top_k: int,
    cfg: dict[str, Any],
    instrument: str,
    categories: dict[str, str] | None = None,
) -> pd.DataFrame:
    """The EcoTaxa object table for a predictions table (see config/README.md, export.ecotaxa)."""
    categories = categories or {}
    zooprocess = cfg.get("convention") == "zooprocess"
    cropped = preds["crop_w"].fillna(-1).to_numpy() > 0 if "crop_w" in preds else np.zeros(len(preds), bool)
    ids = object_ids(preds, cfg["sample_id"])
    folder = "" if zooprocess else "images/"  # ZooProcess: img_file_name = <object_id>.<ext>
    out = pd.DataFrame(
        {
            "img_file_name": [
                image_name(i, s, c, folder) for i, s, c in zip(ids, preds["source"], cropped, strict=True)
            ],
            "object_id": ids,
            "object_annotation_category": [categories.get(v, v) for v in preds["top1_label"]],
            "object_annotation_status": "predicted",
            "object_sha256": preds["id"].to_numpy(),  # content hash: finds duplicate images
        }
    )
    for k in range(1, top_k + 1):
        if f"top{k}_label" not in preds:
            break
        if k > 1:
            out[f"object_pred_top{k}"] = [categories.get(v, v) for v in preds[f"top{k}_label"]]
        out[f"object_score_top{k}"] = preds[f"top{k}_prob"].astype(float).round(6).to_numpy()
    for cls in cfg.get("class_scores") or []:
        out[ecotaxa_name(f"p_{cls}")] = class_probability(preds, cls, top_k)
    skip = {
        "seq",
        "id",
        "source",
        "source_hex",  # the local path's bytes: never published
        "object_name",
        "model_id",
        "run_id",
        "embedding",
        "crop_x",
        "crop_y",
        "crop_w",
        "crop_h",
    } | {c for c in preds.columns if re.match(r"top\d+_", c)}
    for col in preds.columns:
        if col not in skip:
            name = ecotaxa_name(col)
            if name not in out:
                out[name] = preds[col].to_numpy()
    # a per-object sample (a manifest column, a detection campaign's samples) wins over the
    # campaign's; each such sample is its own acquisition unless the campaign names one
    per_object = "sample_id" in preds
    out["sample_id"] = preds["sample_id"].astype(str).to_numpy() if per_object else cfg["sample_id"]
    acq = cfg.get("acq_id")
    if acq and per_object and out["sample_id"].nunique() > 1:  # an acquisition belongs to one sample
        out["acq_id"] = out["sample_id"] + "_" + acq
    else:
        out["acq_id"] = acq or out["sample_id"]
    out["acq_instrument"] = instrument
    out["process_id"] = preds["run_id"].to_numpy() if "run_id" in preds else ""
    out["process_model_id"] = preds["model_id"].to_numpy() if "model_id" in preds else ""
    return zooprocess_units(out, preds) if zooprocess else out


def class_probability(preds: pd.DataFrame, label: str, top_k: int) -> np.ndarray:
    """P(label) per row from the top-k columns (0 where the label is not in the top k)."""
    p = np.zeros(len(preds))
    for k in range(1, top_k + 1):
        if f"top{k}_label" not in preds:
            break
        hit = (preds[f"top{k}_label"] == label).to_numpy()
        p[hit] = preds.loc[hit, f"top{k}_prob"].astype(float).to_numpy()
    return p.round(6)


def type_row(df: pd.DataFrame) -> list[str]:
    """[f] for numeric custom columns, [t] otherwise (sample/acq/process are text in EcoTaxa)."""
    types = []
    for col in df.columns:
        numeric = pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col])
        text = col in KNOWN_TEXT or col.startswith(("sample_", "acq_", "process_"))
        types.append("[f]" if numeric and not text else "[t]")
    return types


def write_tsv(df: pd.DataFrame, path: str | Path) -> None:
    """Write header + type row + data; UTF-8 with BOM when any text is non-ASCII (EcoTaxa rule)."""
    buf = io.StringIO()
    buf.write("\t".join(df.columns) + "\n")
    buf.write("\t".join(type_row(df)) + "\n")
    df.to_csv(buf, sep="\t", index=False, header=False, lineterminator="\n", float_format="%.6g")
    text = buf.getvalue()
    encoding = "utf-8" if text.isascii() else "utf-8-sig"
    with atomic_path(path) as tmp:
        tmp.write_bytes(text.encode(encoding))


def read_tsv(path: str | Path) -> tuple[pd.DataFrame, list[str]]:
    """Read an EcoTaxa TSV back: (data, type row)."""
    raw = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, encoding="utf-8-sig")
    types = raw.iloc[0].tolist()
    return raw.iloc[1:].reset_index(drop=True), types


_JPEG_SOI, _JPEG_SOS, _JPEG_APP1 = b"\xff\xd8", 0xDA, 0xE1
_EXIF_HEADER, _XMP_HEADER = b"Exif\x00\x00", b"http://ns.adobe.com/xap/1.0/\x00"


def _orientation_exif(orientation: int) -> bytes:
    """An APP1 segment holding only the EXIF Orientation tag (Pillow writes the TIFF structure)."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    payload = exif.tobytes()  # starts with Exif\0\0
    return b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload


def strip_exif(data: bytes) -> bytes:
    """The same image without its EXIF and XMP metadata (GPS position, camera serial, dates),
    pixels untouched: a JPEG loses its EXIF/XMP APP1 segments (the entropy-coded data is copied
    byte for byte), keeping only the Orientation tag so viewers still turn it upright; a PNG with
    EXIF is re-encoded losslessly without it. Other files come back as they are."""
    if data[:2] == _JPEG_SOI:
        return _strip_jpeg_app1(data)
    with Image.open(io.BytesIO(data)) as im:
        if im.format != "PNG" or not (im.info.get("exif") or "XML:com.adobe.xmp" in im.info):
            return data
        out = io.BytesIO()
        im.save(out, "PNG")  # Pillow writes no eXIf/XMP unless asked
        return out.getvalue()


def _strip_jpeg_app1(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        orientation = int(im.getexif().get(0x0112, 1))
    kept, pos = [_JPEG_SOI], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == _JPEG_SOS:  # image data follows: copied as it is, to the end
            break
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segment = data[pos : pos + 2 + length]
        payload = segment[4:]
        if not (marker == _JPEG_APP1 and payload.startswith((_EXIF_HEADER, _XMP_HEADER))):
            kept.append(segment)
        pos += 2 + length
    if orientation != 1:
        kept.insert(1, _orientation_exif(orientation))
    return b"".join(kept) + data[pos:]


@functools.lru_cache(maxsize=2)
def _decoded(source: str, read=imaging.read_bytes) -> np.ndarray:
    """Decoded image, cached: the crops of one FlowCam collage come one after another."""
    return imaging.decode(read(source)).image


def item_image(
    source: str, crop: tuple[int, int, int, int] | None, read=imaging.read_bytes, exif: bool = False
) -> tuple[bytes, bool]:
    """The bytes to ship for one item: the original file when EcoTaxa accepts it (without its
    EXIF/XMP unless `exif`, see strip_exif), else a PNG (which carries no metadata).

    `read(source) -> bytes`: how to get a file (aquaflow.engine.staging.BundleReader without a shared
    file system)."""
    if crop is None and Path(source).suffix.lower() in ECOTAXA_IMAGE_FORMATS:
        data = read(source)
        return (data if exif else strip_exif(data)), False
    img = _decoded(source, read)
    if crop is not None:
        x, y, w, h = crop
        img = img[y : y + h, x : x + w]
    return imaging.encode(img, ".png"), True


def write_bundle(
    preds: pd.DataFrame, tsv: str | Path, zip_path: str | Path, read=None, strip: bool = True
) -> None:
    """A zip EcoTaxa can import: the TSV at the root and every image under images/.

    `read(source) -> bytes` (default: the file at `source`, or its exact bytes from `source_hex`);
    `strip` (config export.strip_exif): originals go in without their EXIF/XMP (strip_exif)."""
    if read is None:
        from aquaflow.engine.staging import source_reader

        read = source_reader(preds)

    ecotaxa_df, _ = read_tsv(tsv)
    crops = preds[["crop_x", "crop_y", "crop_w", "crop_h"]].to_numpy() if "crop_w" in preds else None
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        zf.write(tsv, Path(tsv).name)
        for i, (src, name) in enumerate(zip(preds["source"], ecotaxa_df["img_file_name"], strict=True)):
            box = None
            if crops is not None and crops[i][2] > 0:
                box = tuple(int(v) for v in crops[i])
            data, _ = item_image(src, box, read, exif=not strip)
            zf.writestr(name, data)


# sample-table (DwC Event) columns -> EcoTaxa object fields, per object from its sample
SAMPLE_FIELDS = {
    "decimalLatitude": "object_lat",
    "decimalLongitude": "object_lon",
    "minimumDepthInMeters": "object_depth_min",
    "maximumDepthInMeters": "object_depth_max",
}


def attach_samples(preds: pd.DataFrame, samples: pd.DataFrame, default: str, where: str) -> pd.DataFrame:
    """Each object's sample fields from the campaign's samples table (one row per eventID): the
    `sample_id` column (default: every object in `default`), position, depth, date and time."""
    ids = preds["sample_id"].astype(str) if "sample_id" in preds else pd.Series(default, index=preds.index)
    rows = samples.set_index("eventID")
    missing = sorted(set(ids) - set(rows.index))
    if missing:
        raise ValueError(
            f"objects of sample(s) {missing[:10]} have no row (eventID) in the samples table {where}"
        )
    out = preds.assign(sample_id=ids.to_numpy())
    for column, field in SAMPLE_FIELDS.items():
        if column in rows:
            out[field] = pd.to_numeric(rows[column].reindex(ids).replace("", np.nan)).to_numpy()
    when = rows["eventDate"].reindex(ids).str.split("/").str[0]  # an interval's start
    out["object_date"] = when.str[:10].str.replace("-", "").to_numpy()
    clock = when.str.extract(r"T(\d{2}):?(\d{2}):?(\d{2})?")
    out["object_time"] = (clock[0] + clock[1] + clock[2].fillna("00")).fillna("").to_numpy()
    return out


def export(
    predictions: str | Path,
    tsv: str | Path,
    settings: dict[str, Any],
    samples: str | Path | None = None,
) -> int:
    """The export step: a campaign's predictions.parquet -> EcoTaxa TSV; returns the row count.

    `settings`: export.ecotaxa plus top_k, instrument, the campaign's metadata, default_sample_id,
    `sample_column` (the prediction column naming each object's sample) and `objects` (the task's
    rows: aquaflow.tasks.objects; absent = classification). `samples`: the campaign's samples table
    (samples.path): every object's sample must have a row, whose position, depth and date it gets.
    """
    meta = settings["metadata"]
    cfg = dict(settings)
    cfg["sample_id"] = str(meta.get("sample_id") or settings["default_sample_id"])
    preds = export_objects(pd.read_parquet(predictions), settings.get("objects"))
    column = settings.get("sample_column") or "sample_id"
    if column in preds and column != "sample_id":
        preds["sample_id"] = preds[column].astype(str)
    if samples:
        from aquaflow.standards.dwca import read_samples

        preds = attach_samples(preds, read_samples(samples), cfg["sample_id"], str(samples))
    cfg["acq_id"] = str(meta.get("acq_id") or ("" if "sample_id" in preds else cfg["sample_id"]))
    for key, value in meta.items():  # constant campaign metadata (cruise, station): sample level
        if key not in ("sample_id", "acq_id"):
            preds[key if key.startswith(PREFIXES) else f"sample_{key}"] = value
    df = table(preds, settings["top_k"], cfg, settings["instrument"], cfg.get("categories"))
    write_tsv(df, tsv)
    return len(df)
