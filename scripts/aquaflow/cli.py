"""The `aquaflow` command: predictions from a given model without writing a config, and the models
this workflow knows. It runs the same library code as the workflow's inference shards: the
classification engine for classifiers (torch/timm/ONNX, Keras), the detection engine for Ultralytics
detect / segment / obb models; which one is read from the model card."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aquaflow.data import imaging

MANIFEST_SUFFIXES = (".parquet", ".csv", ".tsv", ".txt")


def input_spec(
    path: str, kind: str = "auto", extensions: Sequence[str] = imaging.IMAGE_EXTENSIONS
) -> dict[str, Any]:
    """The inference input entry for a path: a folder, a FlowCam run folder, a manifest file, or one
    file with one of `extensions` (the model's input kind: images, or recordings for sound)."""
    p = Path(path)
    if kind == "auto":
        if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            kind = "manifest"
        elif p.is_file() and p.suffix.lower() in extensions:
            kind = "file"
        elif p.is_dir() and any(p.glob("*.lst")):
            kind = "flowcam"
        elif p.is_dir():
            kind = "folder"
        else:
            raise SystemExit(f"aquaflow: {path}: not a folder, a FlowCam run, a manifest or an input file")
    return {"kind": kind, "path": str(p), "column": "path", "extensions": list(extensions)}


def resolve_model(model: str, work: Path, tracking_uri: str | None) -> tuple[Path, dict[str, Any]]:
    """(weights, validated card) of a model folder, a card file or an MLflow registry reference;
    a registry model is downloaded into `work` (whatever its backend)."""
    from aquaflow.models import artifacts

    if model.startswith("models:/"):
        mlflow_cfg = {"tracking_uri": tracking_uri, "results": str(Path("results"))}
        return artifacts.locate(artifacts.source_folder({"source": "mlflow", "uri": model}, mlflow_cfg, work))
    return artifacts.locate(model)


def detection_settings(args: argparse.Namespace, card: dict[str, Any]) -> dict[str, Any]:
    """The campaign prediction settings (`detection.predict`, config/README.md) from the options."""
    tiling = {
        "enabled": args.tile is not None,
        "tile": args.tile or 640,
        "overlap": 128 if args.tile_overlap is None else args.tile_overlap,
        "full_image": False,
        "merge": "nmm",
        "match_metric": "ios",
        "match_threshold": 0.5,
    }
    return {
        "conf": args.conf,
        "iou": args.iou,
        "max_det": args.max_det,
        "batch": args.batch_size or 16,
        "device": args.device,
        "max_pixels": args.max_pixels,
        "imgsz": args.imgsz or int(card["input_size"]),
        "tiling": tiling,
        "pixel_size": None,
    }


def _predict_detections(args, table, weights: Path, card: dict[str, Any], out: Path) -> dict[str, Any]:
    """An Ultralytics model (detect, segment, obb): the detection shard engine, as in a campaign."""
    from aquaflow.backends.yolo import ultra
    from aquaflow.engine import detect

    ultra.setup(out / ".ultralytics")  # its settings stay with the outputs, nothing in $HOME
    names = {"predictions": "parquet", "counts": "parquet", "rejected": "parquet", "summary": "json"}
    settings = detection_settings(args, card)
    return detect.run_shard(
        table,
        weights,
        card,
        {k: out / f"{k}.{ext}" for k, ext in names.items()},
        settings,
        batch_size=settings["batch"],
        device=args.device,
        run_id="cli",
        progress=sys.stderr,
    )


def _predict_classes(args, table, weights: Path, card: dict[str, Any], out: Path) -> dict[str, Any]:
    """A classifier (timm/ONNX or Keras, from its card): the classification shard engine."""
    from aquaflow.engine import infer

    params = {"device": args.device, "batch_size": args.batch_size, "workers": args.workers}
    batch_size, workers = infer.loader_settings(params, args.threads)
    return infer.run_shard(
        table,
        weights,
        card,
        out / "predictions.parquet",
        out / "rejected.parquet",
        out / "summary.json",
        top_k=args.top_k,
        batch_size=batch_size,
        workers=workers,
        threads=args.threads,
        device=args.device,
        embeddings=args.embeddings,
        max_pixels=args.max_pixels,
        backend=args.backend,
        run_id="cli",
        progress=sys.stderr,
        safe_mode=not args.no_safe_mode,
    )


def _predict_sound(args, table, weights: Path, card: dict[str, Any], out: Path) -> dict[str, Any]:
    """A sound model (task sound): one sound shard over the recordings, + per-file/hour tables."""
    from aquaflow.backends.torch_model import pick_device
    from aquaflow.engine import sound

    chosen = {"hop_s": args.hop_s, "channel": args.channel, "tail": args.tail}
    settings = {
        "batch": args.batch_size or 32,
        "device": str(pick_device(args.device)),
        "embeddings": args.embeddings,
        "threads": args.threads,
        "audio": {k: v for k, v in chosen.items() if v is not None},
    }
    return sound.predict_recordings(
        table, weights, card, out, settings, args.absent_class, progress=sys.stderr
    )


def _predict_rasters(args, table, weights: Path, card: dict[str, Any], out: Path) -> dict[str, Any]:
    """A semantic segmentation model (smp): the raster engine, one shard + gather as a campaign."""
    from aquaflow.engine import semantic

    tile = args.tile or int(card["input_size"])
    overlap = tile // 4 if args.tile_overlap is None else args.tile_overlap
    settings = {
        "predict": {"tile": tile, "overlap": overlap, "block": args.block, "batch": args.batch_size or 4},
        "background": args.background,
        "fss_scales": [],
        "fss_classes": [],
    }
    return semantic.predict_table(table, weights, card, out, settings, args.device, args.threads)


# what `aquaflow predict` runs per task of the model card (a new task adds its entry)
PREDICTORS = {
    "classify": _predict_classes,
    "detect": _predict_detections,
    "segment": _predict_detections,
    "obb": _predict_detections,
    "sound": _predict_sound,
    "semantic": _predict_rasters,
}
# the files a model of a task reads (default: images)
INPUT_EXTENSIONS = {"sound": (".wav", ".flac")}


def predict(args: argparse.Namespace) -> int:
    """Predict every input with the model, dispatching on its card (task, backend)."""
    from aquaflow.data import inputs

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        weights, card = resolve_model(args.model, Path(work), args.tracking_uri)
        if card["task"] not in PREDICTORS:
            raise SystemExit(f"aquaflow predict: task {card['task']!r} of the model has no predictor yet")
        extensions = INPUT_EXTENSIONS.get(card["task"], imaging.IMAGE_EXTENSIONS)
        specs = [input_spec(p, args.kind, extensions) for p in args.inputs]
        table = inputs.build(specs, None, None, allow_outside_root=args.allow_paths_outside_root)
        summary = PREDICTORS[card["task"]](args, table, weights, card, out)
    found = f", {summary['detections']} detections" if "detections" in summary else ""
    found += f", {summary['windows']} windows" if "windows" in summary else ""
    print(
        f"{summary['predicted']} predicted{found}, {summary['rejected']} rejected of {summary['seen']} "
        f"({card['task']} model {summary['model_id'][:16]}) -> {out}"
    )
    return 0


def known_models(results: Path) -> list[dict[str, Any]]:
    """One row per model card under <results>/<use case>/model/."""
    rows = []
    for card_path in sorted(results.glob("*/model/model_card.json")):
        card = json.loads(card_path.read_text())
        metrics = card.get("metrics", {})
        rows.append(
            {
                "usecase": card_path.parent.parent.name,
                "model_id": card.get("id", "")[:16],
                "task": card.get("task", "classify"),
                "arch": card.get("arch", ""),
                "classes": len(card.get("classes", [])),
                "input_size": card.get("input_size", ""),
                "source": card.get("imported_from", {}).get("source", "train"),
                "val_macro_f1": metrics.get("val_macro_f1", ""),
                "card": str(card_path),
            }
        )
    return rows


def registered_models(tracking_uri: str) -> list[dict[str, Any]]:
    """Latest versions of every model in an MLflow registry."""
    from aquaflow.monitoring import tracking

    rows = []
    for rm in tracking.client(tracking_uri).search_registered_models():
        for v in rm.latest_versions or []:
            rows.append(
                {
                    "name": rm.name,
                    "version": v.version,
                    "run_id": v.run_id,
                    "uri": f"models:/{rm.name}/{v.version}",
                }
            )
    return rows


def models(args: argparse.Namespace) -> int:
    rows = known_models(Path(args.results))
    if not rows:
        print(f"no model cards under {args.results}/*/model/")
    for r in rows:
        print("\t".join(f"{k}={v}" for k, v in r.items()))
    db = Path(args.results, "mlflow", "mlflow.db")
    uri = args.tracking_uri or (f"sqlite:///{db.resolve()}" if db.is_file() else None)
    if uri:
        for r in registered_models(uri):
            print("\t".join(f"{k}={v}" for k, v in r.items()))
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="aquaflow", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "predict", help="predict images, recordings or rasters with a given model, no config needed"
    )
    p.add_argument(
        "inputs",
        nargs="+",
        help="image folder(s), FlowCam run folder(s), manifest file(s) or input file(s); for a sound "
        "model folder(s) of recordings or recording file(s); for a semantic model raster file(s) or "
        "folder(s)",
    )
    p.add_argument(
        "--model",
        required=True,
        help="model folder (torch, Keras or Ultralytics: read from its card), model_card.json, "
        "or models:/<name>/<version>",
    )
    p.add_argument(
        "-o", "--output", required=True, help="folder for predictions/rejected/summary (detectors: + counts)"
    )
    p.add_argument("--kind", default="auto", choices=["auto", "folder", "flowcam", "manifest", "file"])
    p.add_argument(
        "--allow-paths-outside-root",
        action="store_true",
        help="read files a manifest, FlowCam list or folder link names outside its own folder "
        "(default: rejected as outside_root; as allow_paths_outside_root in a use case)",
    )
    p.add_argument("--batch-size", type=int, default=None, help="images per batch (default: by device)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--max-pixels", type=int, default=imaging.DEFAULT_MAX_PIXELS, help="larger images: too_large"
    )
    c = p.add_argument_group("classifiers (torch, Keras)")
    c.add_argument("--top-k", type=int, default=5)
    c.add_argument("--workers", type=int, default=None)
    c.add_argument("--backend", default="auto", choices=["auto", "eager", "compile", "onnx"])
    c.add_argument("--embeddings", action="store_true")
    c.add_argument(
        "--no-safe-mode",
        action="store_true",
        help="Keras: load a model file holding Lambda layers (Python code run when it loads); only for "
        "files you trust. A model folder or card can never switch this on (as model.safe_mode: false)",
    )
    d = p.add_argument_group("detectors (Ultralytics detect, segment, obb): as detection.predict")
    d.add_argument("--conf", type=float, default=0.25, help="score threshold")
    d.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold")
    d.add_argument("--max-det", type=int, default=300)
    d.add_argument("--imgsz", type=int, default=None, help="default: the card's input_size")
    d.add_argument(
        "--tile", type=int, default=None, help="predict tiles of this side (px); semantic: default input_size"
    )
    d.add_argument("--tile-overlap", type=int, default=None, help="default 128 px; semantic: tile/4")
    a = p.add_argument_group("sound models (task sound): recordings (.wav, .flac), as sound.audio")
    a.add_argument(
        "--hop-s", type=float, default=None, help="seconds between window starts (default: the card's)"
    )
    a.add_argument(
        "--channel",
        default=None,
        type=lambda v: v if v == "mean" else int(v),
        help="channel index, or mean (default: the card's)",
    )
    a.add_argument(
        "--tail", default=None, choices=["pad", "drop"], help="the rest after the last full window"
    )
    a.add_argument("--absent-class", default="none", help="the class meaning no vessel (occupancy)")
    r = p.add_argument_group("semantic segmentation (smp) of rasters: as semantic.predict, + --tile")
    r.add_argument("--block", type=int, default=1024, help="output block side (px): bounds memory")
    r.add_argument("--background", nargs="*", default=[], help="classes that get no polygons")
    p.add_argument("--tracking-uri", default=None, help="MLflow store for models:/ references")
    p.set_defaults(func=predict)
    m = sub.add_parser("models", help="list the models this workflow knows")
    m.add_argument("--results", default="results")
    m.add_argument("--tracking-uri", default=None)
    m.set_defaults(func=models)
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
