"""The `aquaflow` command: predictions from a given model without writing a config, and the models
this workflow knows. It runs the same library code as the workflow's inference shards."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from aquaflow.data import imaging

MANIFEST_SUFFIXES = (".parquet", ".csv", ".tsv", ".txt")


def input_spec(path: str, kind: str = "auto") -> dict[str, Any]:
    """The inference input entry for a path: a folder, a FlowCam run folder or a manifest file."""
    p = Path(path)
    if kind == "auto":
        if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            kind = "manifest"
        elif p.is_dir() and any(p.glob("*.lst")):
            kind = "flowcam"
        elif p.is_dir():
            kind = "folder"
        else:
            raise SystemExit(f"aquaflow: {path}: not a folder, a FlowCam run or a manifest file")
    return {"kind": kind, "path": str(p), "column": "path", "extensions": list(imaging.IMAGE_EXTENSIONS)}


def resolve_model(model: str, work: Path, tracking_uri: str | None) -> tuple[Path, dict[str, Any]]:
    """(weights, card) of a model folder, a card file or an MLflow registry reference."""
    from aquaflow.models import artifacts

    if model.startswith("models:/"):
        weights, card = work / "model.safetensors", work / "model_card.json"
        mlflow_cfg = {"tracking_uri": tracking_uri, "results": str(Path("results"))}
        artifacts.import_model({"source": "mlflow", "uri": model}, weights, card, mlflow_cfg)
        return weights, artifacts.read_card(card)
    return artifacts.locate(model)


def predict(args: argparse.Namespace) -> int:
    from aquaflow.data import inputs
    from aquaflow.engine import infer

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    table = inputs.build([input_spec(p, args.kind) for p in args.inputs], None, None)
    with tempfile.TemporaryDirectory() as work:
        weights, card = resolve_model(args.model, Path(work), args.tracking_uri)
        params = {"device": args.device, "batch_size": args.batch_size, "workers": args.workers}
        batch_size, workers = infer.loader_settings(params, args.threads)
        summary = infer.run_shard(
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
            backend=args.backend,
            run_id="cli",
            progress=sys.stderr,
        )
    print(
        f"{summary['predicted']} predicted, {summary['rejected']} rejected of {summary['seen']} "
        f"(model {summary['model_id'][:16]}) -> {out}"
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
    p = sub.add_parser("predict", help="predict images with a given model, no config needed")
    p.add_argument("inputs", nargs="+", help="image folder(s), FlowCam run folder(s) or manifest file(s)")
    p.add_argument(
        "--model", required=True, help="model folder, model_card.json, or models:/<name>/<version>"
    )
    p.add_argument("-o", "--output", required=True, help="folder for predictions/rejected/summary")
    p.add_argument("--kind", default="auto", choices=["auto", "folder", "flowcam", "manifest"])
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", default="auto", choices=["auto", "eager", "compile", "onnx"])
    p.add_argument("--embeddings", action="store_true")
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
