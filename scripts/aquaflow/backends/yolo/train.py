"""Training a YOLO detector / segmenter / OBB model with Ultralytics, offline, into a model card and
an MLflow training run."""

from __future__ import annotations

import logging
import platform
import shutil
import time
from pathlib import Path
from typing import Any

import pandas as pd

from aquaflow.backends.yolo import ultra
from aquaflow.io import atomic_path, read_json, sha256_file, write_tsv
from aquaflow.models.artifacts import write_card
from aquaflow.monitoring import tracking
from aquaflow.tasks.detect.plots import training_curve

log = logging.getLogger(__name__)

AUGMENTATION_KEYS = ("mosaic", "fliplr", "flipud", "degrees", "translate", "scale", "hsv_h", "hsv_s", "hsv_v")


def train_args(spec: dict[str, Any], data_yaml: Path, work: Path, threads: int) -> dict[str, Any]:
    """Ultralytics train() arguments from `detection.train` (+ model) settings.

    Data-loading workers: threads - 1 on a GPU; none on a CPU, where the forward pass already uses
    every thread."""
    t = spec["train"]
    dev = ultra.device_arg(t["device"])
    workers = max(0, threads - 1) if dev != "cpu" else 0
    return {
        "data": str(data_yaml),
        "epochs": t["epochs"],
        "imgsz": spec["imgsz"],
        "batch": t["batch"],
        "nbs": t["nbs"],
        "device": dev,
        "amp": bool(t["amp"]) and dev != "cpu",  # the AMP check downloads a model: only when asked, on GPU
        "pretrained": bool(spec["model"].get("weights")),
        "optimizer": t["optimizer"],
        "lr0": t["lr0"],
        "warmup_epochs": t["warmup_epochs"],
        "patience": t["patience"] or t["epochs"] + 1,
        "close_mosaic": t["close_mosaic"],
        "seed": t["seed"],
        "deterministic": True,
        "val": t["validate_each_epoch"],
        "plots": False,
        "workers": workers,
        "project": str(Path(work).resolve()),  # a relative one would land under runs_dir
        "name": "run",
        "exist_ok": True,
        "verbose": False,
        **{k: t["augmentation"][k] for k in AUGMENTATION_KEYS},
    }


def library_versions() -> dict[str, str]:
    import torch
    import ultralytics

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ultralytics": ultralytics.__version__,
    }


def history(results_csv: Path) -> pd.DataFrame:
    """Ultralytics' results.csv with plain column names, plus seconds per epoch."""
    df = pd.read_csv(results_csv)
    df.columns = [c.strip() for c in df.columns]
    if "time" in df.columns:
        df["epoch_seconds"] = df["time"].diff().fillna(df["time"])
    return df


def model_card(
    spec: dict[str, Any],
    task: str,
    args: dict[str, Any],
    facts: dict[str, Any],
    weights: Path,
    seconds: float,
    epochs: int,
) -> dict[str, Any]:
    """The model card of a trained YOLO model (`facts`: dataset.json of detect_prepare)."""
    arch = (
        Path(spec["model"]["weights"]).name
        if spec["model"].get("weights")
        else ultra.model_yaml(spec["model"]["size"], task, spec["model"]["family"])
    )
    return {
        "id": sha256_file(weights),
        "format": "ultralytics",
        "weights": weights.name,
        "task": task,
        "backend": "ultralytics",
        "arch": arch,
        "classes": facts["names"],
        "input_size": spec["imgsz"],
        "normalization": {"preprocess": "Ultralytics letterbox to input_size, RGB / 255"},
        "training": {
            **{k: v for k, v in args.items() if k not in ("data", "project", "name", "exist_ok", "verbose")},
            "seconds": round(seconds, 1),
            "seconds_per_epoch": round(seconds / max(1, epochs), 2),
            "epochs_run": epochs,
        },
        "data": {"splits": facts["splits"], "source": facts["source"]},
        "libraries": library_versions(),
        "loading": "Ultralytics .pt is a pickle: loaded with ULTRALYTICS_SAFE_LOAD (weights_only allow-list);"
        " load only weights this workflow produced or that you trust",
    }


def final_metrics(trainer: Any) -> dict[str, float]:
    """The trainer's last validation figures (of the best checkpoint) as `best.<name>` metrics."""
    found = getattr(trainer, "metrics", None) or {}
    return {f"best.{k}": float(v) for k, v in found.items() if isinstance(v, (int, float))}


def fit(model: Any, args: dict[str, Any], out: dict[str, str | Path]) -> tuple[float, float, pd.DataFrame]:
    """Ultralytics' trainer with `args`; the best checkpoint (else the last) becomes out["weights"],
    its per-epoch results out["history"] and out["curve"]. Returns (start time, seconds, history)."""
    log.info("ultralytics train %s", args)
    started, t0 = time.time(), time.perf_counter()
    model.train(**args)
    seconds = time.perf_counter() - t0
    save_dir = Path(model.trainer.save_dir)
    best = save_dir / "weights" / "best.pt"
    if not best.exists():
        best = save_dir / "weights" / "last.pt"
    with atomic_path(out["weights"]) as tmp:
        shutil.copyfile(best, tmp)
    hist = history(save_dir / "results.csv")
    write_tsv(hist, out["history"])
    training_curve(hist, out["curve"])
    return started, seconds, hist


def run(
    *,
    name: str,
    data_dir: str | Path,
    spec: dict[str, Any],
    task: str,
    out: dict[str, str | Path],
    work: str | Path,
    ultralytics_dir: str | Path,
    mlflow_cfg: dict[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """Train, write model.pt (the best checkpoint), history.tsv and the curve, then the MLflow
    training run (tracking.log_training: params, per-epoch history, card, model folder, registry)."""
    ultra.setup(ultralytics_dir)
    work = Path(work)
    shutil.rmtree(work / "run", ignore_errors=True)
    data_yaml = Path(data_dir) / "data.yaml"
    facts = read_json(Path(data_dir) / "dataset.json")
    model = ultra.build(spec["model"], task)
    args = train_args(spec, data_yaml, work, threads)
    started, seconds, hist = fit(model, args, out)
    card = model_card(spec, task, args, facts, Path(out["weights"]), seconds, len(hist))
    log.info("trained %s in %.1f s (%d epochs)", card["arch"], seconds, len(hist))
    params = {
        "task": task,
        "model": spec["model"],
        "imgsz": spec["imgsz"],
        "training": spec["train"],
        "classes": len(facts["names"]),
        "images": {split: facts["splits"][split]["images"] for split in facts["splits"]},
    }
    return tracking.log_training(
        usecase=name,
        card=card,
        card_path=out["card"],
        weights=out["weights"],
        params=params,
        history=hist,
        mlflow_cfg=mlflow_cfg,
        metrics={"train_seconds": seconds, **final_metrics(model.trainer)},
        artifacts=[out["history"], out["curve"]],
        started=started,
        write_card=write_card,
    )
