"""Semantic segmentation of georeferenced rasters on the engine: one raster in, its class and
probability GeoTIFFs (input's CRS and transform, COG), its class polygons (GeoPackage, m²) and a
summary out; with a label raster, its scores (IoU, Dice, pixel accuracy, FSS).

Prediction is tiled and blended in constant memory (`aquaflow.tasks.semantic.tiling`); scoring
reads the class raster and the labels whole (evaluation rasters, not campaign-sized ones).
"""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aquaflow.data.rasters import (
    NODATA_LABEL,
    grid_of,
    rasterize_labels,
    read_labels,
    read_window,
    sample_valid_pixels,
)
from aquaflow.io import atomic_path, read_json, write_json, write_parquet, write_tsv
from aquaflow.models.artifacts import read_card
from aquaflow.tasks import intervals
from aquaflow.tasks.semantic import outputs
from aquaflow.tasks.semantic.metrics import SemanticScores
from aquaflow.tasks.semantic.tiling import PredictFn, Tiling, predict_blocks

log = logging.getLogger(__name__)
GDAL_CACHE_MB = 64  # constant memory whatever the raster's size
DRIFT_PIXELS = 256  # valid pixels sampled per campaign raster (seeded by its id) for the drift tests


def predict_raster(
    predict: PredictFn,
    card: dict[str, Any],
    image: str | Path,
    out: dict[str, str | Path],
    tiling: Tiling,
    background: Sequence[str] = (),
    shoreline_class: str | None = None,
) -> dict[str, Any]:
    """Predict one raster into out[classes|probabilities|polygons] (and out[mask_png], the class
    mask as PNG, out[shoreline], the boundary of `shoreline_class` as GeoJSON polylines, when
    given); returns its summary: pixels and area (m², projected CRS) per class, polygons per class,
    shoreline polylines and length, seconds. Classes in `background` get no polygons."""
    import rasterio

    from aquaflow.tasks.semantic import shoreline

    classes = list(card["classes"])
    grid = grid_of(image)
    t0 = time.time()
    # GDAL's block cache (default: 5 % of RAM) would otherwise grow with the raster written
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open(image) as src:

        def read(r: int, c: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
            return read_window(src, r, c, h, w, card["bands"], card["normalization"])

        blocks = predict_blocks(read, grid.height, grid.width, predict, tiling)
        counts = outputs.write_prediction(blocks, grid, classes, out["classes"], out["probabilities"])
        seconds = time.time() - t0
        n_polygons = outputs.write_polygons(
            out["classes"], classes, out["polygons"], skip=background, strip=tiling.block
        )
    pixel = outputs.pixel_area_m2(grid)
    extra: dict[str, Any] = {}
    if "mask_png" in out:
        shoreline.write_png_mask(out["classes"], out["mask_png"])
    if "shoreline" in out and shoreline_class:
        found = shoreline.write_shoreline(
            out["classes"], classes.index(shoreline_class), out["shoreline"], shoreline_class
        )
        extra = {"shoreline_polylines": found["polylines"], "shoreline_length": found["length"]}
    return {
        "image": str(image),
        "height": grid.height,
        "width": grid.width,
        "pixels": counts,
        "area_m2": {k: (v * pixel if pixel else None) for k, v in counts.items()},
        "polygons": n_polygons,
        "seconds": seconds,
        "megapixels_per_second": grid.height * grid.width / 1e6 / max(seconds, 1e-9),
        **extra,
    }


def output_paths(folder: Path, name: str, settings: dict[str, Any]) -> dict[str, Path]:
    """Where one raster's outputs go: class and probability GeoTIFFs, polygons, and the PNG class
    mask (settings.png_masks) and shoreline GeoJSON (settings.shoreline) when asked for."""
    paths = {
        "classes": folder / f"{name}_classes.tif",
        "probabilities": folder / f"{name}_probabilities.tif",
        "polygons": folder / f"{name}.gpkg",
    }
    if settings.get("png_masks"):
        paths["mask_png"] = folder / f"{name}_classes.png"
    if settings.get("shoreline"):
        paths["shoreline"] = folder / f"{name}_shoreline.geojson"
    return paths


def score_raster(class_path: str | Path, labels: str | Path, scores: SemanticScores) -> dict[str, Any]:
    """Add one predicted class raster and its label raster to `scores`; returns this raster's own
    figures too."""
    import rasterio

    with rasterio.open(class_path) as p, rasterio.open(labels) as t:
        if (p.height, p.width) != (t.height, t.width):
            raise ValueError(f"{labels}: {t.height}x{t.width} labels for a {p.height}x{p.width} raster")
        pred = p.read(1)
        truth = read_labels(t, 0, 0, t.height, t.width)
    valid = pred != NODATA_LABEL
    scores.add(truth, pred, valid)
    own = SemanticScores(scores.classes, scores.scales, scores.fss_classes)
    own.add(truth, pred, valid)
    return own.result()


# --- prepare: rasters paired with labels, split by raster ---------------------------------------


def _rasters(folder: Path, extensions: Sequence[str]) -> list[Path]:
    ext = {e.lower() for e in extensions}
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in ext)


def label_path(raw: Path, data: dict[str, Any], rel: Path) -> Path:
    """The label raster of the image at `rel`: the same relative name under data.labels, with the
    extension data.label_extension when set (camera images: images/x.jpg, masks/x.png)."""
    ext = data.get("label_extension")
    return raw / data["labels"] / (rel.with_suffix(ext) if ext else rel)


def prepare(
    raw: str | Path, data: dict[str, Any], classes: list[str], manifest: str | Path, labels_dir: str | Path
) -> pd.DataFrame:
    """manifest.parquet: one row per raster (id, image, labels, split). Labels are the raster of the
    same name under data.labels, or (data.vector_field set) the GeoPackage / GeoJSON of the same
    stem, rasterised onto the image's grid into `labels_dir`. Splits by raster, seeded; the first
    rasters of the shuffle go to test, then val, the rest (at least one) to train."""
    raw, labels_dir = Path(raw), Path(labels_dir)
    labels_dir.mkdir(parents=True, exist_ok=True)
    images = _rasters(raw / data["images"], data["extensions"])
    if not images:
        raise ValueError(f"no rasters with extensions {data['extensions']} under {raw / data['images']}")
    rows = []
    for image in images:
        rel = image.relative_to(raw / data["images"])
        if data["vector_field"]:
            vector = next(
                (
                    v
                    for v in (raw / data["labels"] / rel).parent.glob(f"{image.stem}.*")
                    if v.suffix.lower() in (".gpkg", ".geojson", ".json", ".shp")
                ),
                None,
            )
            if vector is None:
                raise FileNotFoundError(
                    f"{image}: no vector labels {image.stem}.gpkg/.geojson under {raw / data['labels']}"
                )
            labels = labels_dir / rel.with_suffix(".tif")
            labels.parent.mkdir(parents=True, exist_ok=True)
            _write_labels(
                rasterize_labels(vector, image, data["vector_field"], classes, data["background"]),
                image,
                labels,
            )
        else:
            labels = label_path(raw, data, rel)
            if not labels.is_file():
                raise FileNotFoundError(f"{image}: no label raster {labels}")
            g, gl = grid_of(image), grid_of(labels)
            if (g.height, g.width) != (gl.height, gl.width):
                raise ValueError(f"{labels}: {gl.height}x{gl.width} labels for a {g.height}x{g.width} raster")
        rows.append({"id": rel.with_suffix("").as_posix(), "image": str(image), "labels": str(labels)})
    df = pd.DataFrame(rows)
    order = np.random.default_rng(data["split"]["seed"]).permutation(len(df))
    n_test = round(data["split"]["test"] * len(df))
    n_val = round(data["split"]["val"] * len(df))
    n_test, n_val = min(n_test, max(len(df) - 1, 0)), min(n_val, max(len(df) - 1 - n_test, 0))
    split = np.array(["train"] * len(df), dtype=object)
    split[order[:n_test]] = "test"
    split[order[n_test : n_test + n_val]] = "val"
    df["split"] = split
    write_parquet(df, manifest)
    log.info("prepared %d rasters: %s", len(df), df["split"].value_counts().to_dict())
    return df


def label_pixels(path: str | Path, n_classes: int) -> np.ndarray:
    """Labelled pixels per class of a label raster (nodata and out-of-range values skipped)."""
    import rasterio

    counts = np.zeros(n_classes, np.int64)
    with rasterio.open(path) as src:
        for _, window in src.block_windows(1):
            values = src.read(1, window=window).ravel()
            counts += np.bincount(values[values < n_classes], minlength=n_classes)[:n_classes]
    return counts


def _write_labels(labels: np.ndarray, like: str | Path, path: Path) -> None:
    import rasterio

    with rasterio.open(like) as src:
        profile = {
            "driver": "GTiff",
            "height": src.height,
            "width": src.width,
            "count": 1,
            "dtype": "uint8",
            "crs": src.crs,
            "transform": src.transform,
            "nodata": NODATA_LABEL,
            "compress": "deflate",
        }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write(labels, 1)


# --- evaluate: the test rasters ---------------------------------------------------------------


def evaluate(
    *,
    manifest_path: str | Path,
    weights: str | Path,
    card_path: str | Path,
    settings: dict[str, Any],
    out: dict[str, str | Path],
    mlflow_cfg: dict[str, Any],
    device: str = "auto",
    threads: int = 1,
) -> dict[str, Any]:
    """Predict every test raster (val when there is none) as campaigns do, score it against its
    labels (IoU, Dice, pixel accuracy, FSS at settings.fss_scales), write metrics.json,
    summary.tsv, per_class.tsv and one overlay per raster; add the figures to the MLflow run."""
    import rasterio

    from aquaflow.backends.smp_model import SemanticPredictor
    from aquaflow.monitoring import tracking
    from aquaflow.tasks.semantic import plots

    card = read_card(card_path)
    manifest = pd.read_parquet(manifest_path)
    split = "test" if (manifest["split"] == "test").any() else "val"
    rows = manifest[manifest["split"] == split]
    if rows.empty:
        raise ValueError(f"{manifest_path}: no test or val raster to evaluate on")
    predictor = SemanticPredictor.load(weights, card, device, threads)
    classes = list(card["classes"])
    scores = SemanticScores(classes, settings["fss_scales"], settings["fss_classes"])
    work, overlays = Path(out["rasters"]), Path(out["overlays"])
    work.mkdir(parents=True, exist_ok=True)
    overlays.mkdir(parents=True, exist_ok=True)
    per_raster = {}
    for row in rows.itertuples():
        name = Path(row.id).name
        paths = output_paths(work, name, settings)
        summary = predict_raster(
            predictor,
            card,
            row.image,
            paths,
            tiling_of(settings),
            settings["background"],
            settings.get("shoreline"),
        )
        summary["scores"] = score_raster(paths["classes"], row.labels, scores)
        per_raster[row.id] = summary
        with (
            rasterio.open(row.image) as src,
            rasterio.open(paths["classes"]) as p,
            rasterio.open(row.labels) as t,
        ):
            image = src.read(card["bands"][0], masked=True).astype("float32").filled(np.nan)  # uint16 too
            plots.overlay(
                image, t.read(1), p.read(1), classes, f"{row.id} ({split})", overlays / f"{name}.png"
            )
    result = {**scores.result(), "intervals": scores.intervals(settings.get("intervals", {}))}
    result |= {"split": split, "rasters": per_raster}
    write_json(result, out["metrics"])
    headline = {
        "pixel accuracy": result["pixel_accuracy"],
        "mean IoU": result["mean_iou"],
        "mean Dice": result["mean_dice"],
    }
    for cls, by_scale in result["fss"].items():
        headline |= {f"FSS {cls} {s} px": v for s, v in by_scale.items()}
    write_tsv(pd.DataFrame({"metric": list(headline), "value": list(headline.values())}), out["summary"])
    per_class = pd.DataFrame([{"class": k, **v} for k, v in result["per_class"].items()])
    write_tsv(per_class, out["per_class"])
    flat = {f"test_{k.replace(' ', '_')}": v for k, v in headline.items()}
    flat |= {f"test_{k}": v for k, v in intervals.flat(result["intervals"]).items()}
    tracking.log_evaluation(
        card,
        flat,
        "evaluation",
        mlflow_cfg,
        files=[out["summary"], out["per_class"]],
        dicts={"metrics.json": result},
    )
    log.info("evaluated %d %s rasters: %s", len(rows), split, headline)
    return result


def tiling_of(settings: dict[str, Any]) -> Tiling:
    p = settings["predict"]
    return Tiling(tile=p["tile"], overlap=p["overlap"], block=p["block"], batch=p["batch"])


# --- campaigns: list rasters, predict a shard of them, gather ------------------------------------


def campaign_inputs(
    inputs: list[dict[str, Any]], raw: str | Path | None, data: dict[str, Any], out: str | Path
) -> pd.DataFrame:
    """inputs.parquet of a campaign: one row per raster (id, path, labels when the dataset has
    them). kind dataset = every raster of the use case's source (with its labels, scored);
    kind folder = the rasters under `path` (extensions: data.extensions)."""
    rows = []
    for spec in inputs:
        if spec["kind"] == "dataset":
            base = Path(raw) / data["images"]
            for p in _rasters(base, data["extensions"]):
                rel = p.relative_to(base)
                labels = label_path(Path(raw), data, rel)
                rows.append(
                    {
                        "id": rel.with_suffix("").as_posix(),
                        "path": str(p),
                        "labels": str(labels) if labels.is_file() and not data["vector_field"] else None,
                    }
                )
        elif spec["kind"] == "folder":
            base = Path(spec["path"])
            for p in _rasters(base, data["extensions"]):
                rows.append(
                    {"id": p.relative_to(base).with_suffix("").as_posix(), "path": str(p), "labels": None}
                )
        else:
            raise ValueError(
                f"task semantic reads campaign inputs of kind dataset or folder, not {spec['kind']!r}"
            )
    df = pd.DataFrame(rows, columns=["id", "path", "labels"])
    twice = sorted(set(df.loc[df["id"].duplicated(), "id"]))
    if twice:
        raise ValueError(f"campaign inputs list these raster ids twice (rename the files): {twice[:10]}")
    write_parquet(df, out)
    return df


def shard_rows(inputs: pd.DataFrame, scatteritem: str) -> pd.DataFrame:
    """The rows of shard `i-of-n`: every n-th raster from the i-th (rasters are few and large)."""
    i, n = (int(x) for x in scatteritem.split("-of-"))
    return inputs.iloc[i - 1 :: n]


def run_shard(
    *,
    inputs_path: str | Path,
    weights: str | Path,
    card_path: str | Path | dict[str, Any],
    scatteritem: str,
    settings: dict[str, Any],
    out_dir: str | Path,
    out_summary: str | Path,
    device: str = "auto",
    threads: int = 1,
    rejected_before: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Predict the shard's rasters into out_dir/<id>_{classes,probabilities}.tif + <id>.gpkg; a
    raster that cannot be read is rejected with its reason, as is every id of `rejected_before`
    (never opened). The shard's summary (every raster in exactly one of predicted or rejected) is
    written last; out_dir is complete when it exists. `card_path`: the card file, or the card."""
    from rasterio.errors import RasterioError

    from aquaflow.backends.smp_model import SemanticPredictor

    card = card_path if isinstance(card_path, dict) else read_card(card_path)
    rows = shard_rows(pd.read_parquet(inputs_path), scatteritem)
    predictor = SemanticPredictor.load(weights, card, device, threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    scores = SemanticScores(list(card["classes"]), settings["fss_scales"], settings["fss_classes"])
    predicted, rejected = {}, {}
    t0 = time.time()
    for row in rows.itertuples():
        if rejected_before and row.id in rejected_before:
            rejected[row.id] = {"path": row.path, **rejected_before[row.id]}
            continue
        name = row.id.replace("/", "__")
        paths = output_paths(out_dir, name, settings)
        try:
            summary = predict_raster(
                predictor,
                card,
                row.path,
                paths,
                tiling_of(settings),
                settings["background"],
                settings.get("shoreline"),
            )
        except (RasterioError, ValueError) as exc:
            rejected[row.id] = {"path": row.path, "reason": "unreadable", "detail": str(exc)[:500]}
            log.warning("rejected %s: %s", row.path, exc)
            continue
        if row.labels:
            summary["scores"] = score_raster(paths["classes"], row.labels, scores)
        sample = sample_valid_pixels(row.path, card["bands"], DRIFT_PIXELS, zlib.crc32(row.id.encode()))
        summary["band_sample"] = {str(b): sample[:, j].tolist() for j, b in enumerate(card["bands"])}
        summary["outputs"] = {k: Path(v).name for k, v in paths.items()}
        predicted[row.id] = summary
        log.info("%s: %.2f Mpx/s, %s", row.id, summary["megapixels_per_second"], summary["pixels"])
    result = {
        "scatteritem": scatteritem,
        "seen": len(rows),
        "predicted": predicted,
        "rejected": rejected,
        "seconds": time.time() - t0,
        "model_id": card["id"],
    }
    if scores.cm is not None:
        result["scores"] = scores.result()
    write_json(result, out_summary)
    return result


def gather(
    *,
    inputs_path: str | Path,
    summaries: list[str | Path],
    shard_dirs: list[str | Path],
    classes: list[str],
    out: dict[str, str | Path],
) -> dict[str, Any]:
    """predictions.parquet (one row per predicted raster: seq, id, source, its outputs, pixels and m²
    per class, polygons per class, the drift pixel sample per band, scores), rejected.parquet,
    summary.json (seen = predicted + rejected, per_class = pixels, area_m2 per class) and
    summary.tsv of a campaign."""
    inputs = pd.read_parquet(inputs_path)
    rows, rejected, shards, model = [], [], {}, ""
    for path, folder in zip(summaries, shard_dirs, strict=True):
        s = read_json(path)
        model = s["model_id"]
        shards[s["scatteritem"]] = {"seconds": s["seconds"], "rasters": s["seen"]}
        for rid, p in s["predicted"].items():
            scores = p.get("scores") or {}
            row = {
                "id": rid,
                "image": p["image"],
                "height": p["height"],
                "width": p["width"],
                **{f"{k}_path": str(Path(folder) / v) for k, v in p["outputs"].items()},
                **{f"pixels_{c}": p["pixels"][c] for c in classes},
                **{f"area_m2_{c}": p["area_m2"][c] for c in classes},
                **{f"polygons_{c}": n for c, n in p["polygons"].items()},
                "megapixels_per_second": p["megapixels_per_second"],
                **{k: p[k] for k in ("shoreline_polylines", "shoreline_length") if k in p},
                **{f"band_{b}": v for b, v in p.get("band_sample", {}).items()},  # drift: pixels
                "mean_iou": scores.get("mean_iou"),
                "pixel_accuracy": scores.get("pixel_accuracy"),
            }
            for cls, by_scale in (scores.get("fss") or {}).items():
                row |= {f"fss_{cls}_{k}": v for k, v in by_scale.items()}
            rows.append(row)
        rejected += [{"id": rid, **r} for rid, r in s["rejected"].items()]
    predictions = pd.DataFrame(rows).sort_values("id") if rows else pd.DataFrame(columns=["id", "image"])
    predictions.insert(0, "seq", np.arange(len(predictions), dtype="int64"))  # drift batches: order,
    predictions.insert(2, "source", predictions["image"])  # and folder
    rejected_df = pd.DataFrame(rejected, columns=["id", "path", "reason", "detail"])
    if len(predictions) + len(rejected_df) != len(inputs):
        raise RuntimeError(
            f"{len(inputs)} rasters listed but {len(predictions)} predicted + {len(rejected_df)} rejected"
        )
    write_parquet(predictions, out["predictions"])
    write_parquet(rejected_df, out["rejected"])
    per_class = {c: int(predictions[f"pixels_{c}"].sum()) if rows else 0 for c in classes}
    area = {
        c: float(predictions[f"area_m2_{c}"].sum())
        if rows and predictions[f"area_m2_{c}"].notna().all()
        else None
        for c in classes
    }
    summary = {
        "model_id": model,
        "seen": len(inputs),
        "predicted": len(predictions),
        "rejected": len(rejected_df),
        "rejected_by_reason": rejected_df["reason"].value_counts().to_dict(),
        "per_class": per_class,
        "unit": "pixels",
        "area_m2": area,
        "shards": shards,
    }
    write_json(summary, out["summary"])
    cols = [
        "id",
        *[c for c in predictions.columns if c.startswith(("area_m2_", "polygons_", "fss_"))],
        "mean_iou",
    ]
    write_tsv(predictions[[c for c in cols if c in predictions]], out["table"])
    return summary


def predict_table(
    table: pd.DataFrame,
    weights: str | Path,
    card: dict[str, Any],
    out: str | Path,
    settings: dict[str, Any],
    device: str = "auto",
    threads: int = 1,
) -> dict[str, Any]:
    """`aquaflow predict` for rasters: the rows of an input table (`aquaflow.data.inputs.build`)
    predicted as one campaign shard and gathered into `out` (inputs, predictions, rejected, summary
    .json/.tsv; rasters and polygons under `rasters/`). Ids are file stems (made unique); a row
    outside its input's root is rejected as such, never opened."""
    import os

    from aquaflow.data.imaging import Rejected
    from aquaflow.data.inputs import read_targets

    out = Path(out)
    rows, before, seen = [], {}, {}
    for target, source in zip(read_targets(table), table["source"].astype(str), strict=True):
        stem = Path(source).stem
        seen[stem] = seen.get(stem, 0) + 1
        rid = stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"
        if isinstance(target, Rejected):
            before[rid] = {"reason": target.reason, "detail": target.detail}
        path = source if isinstance(target, Rejected) else os.fsdecode(target)
        rows.append({"id": rid, "path": path, "labels": None})
    inputs_path = out / "inputs.parquet"
    write_parquet(pd.DataFrame(rows, columns=["id", "path", "labels"]), inputs_path)
    shard = {"inputs_path": inputs_path, "weights": weights, "card_path": card, "settings": settings}
    run_shard(
        **shard,
        scatteritem="1-of-1",
        out_dir=out / "rasters",
        out_summary=out / "shard.json",
        device=device,
        threads=threads,
        rejected_before=before,
    )
    names = {"predictions": "parquet", "rejected": "parquet", "summary": "json"}
    return gather(
        inputs_path=inputs_path,
        summaries=[out / "shard.json"],
        shard_dirs=[out / "rasters"],
        classes=list(card["classes"]),
        out={**{k: out / f"{k}.{ext}" for k, ext in names.items()}, "table": out / "summary.tsv"},
    )
