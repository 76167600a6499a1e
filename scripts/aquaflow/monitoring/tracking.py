"""MLflow tracking: a local SQLite store under the results folder unless MLFLOW_TRACKING_URI is set.

Safe for jobs that log at the same time (several use cases training at once on a cluster):
on a SQLite store, database creation/migration and experiment creation happen under a file lock;
on a server, a lost create-experiment race is resolved by reading the winner's experiment.
Every trainer (torch, Keras, Ultralytics) ends in `log_training`: one run with params, per-epoch
history, the card and the model folder, registered in the model registry (`runs:/<run_id>/model`, a
folder holding the model card and the weights); `models:/<name>/<version>` or `models:/<name>@<alias>`
loads it back. `log_evaluation` adds held-out figures to that run.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from aquaflow.io import public_uri, redact_uri, redacted, write_json

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"  # run artifact path of the model folder (card + weights)
MODEL_CARD = "model_card.json"  # the card's name inside that folder (aquaflow.models.artifacts.CARD)
_BAD_METRIC_CHARS = re.compile(r"[^\w\-./ :]")


def tracking_uri(configured: str | None, results: str | Path) -> str:
    """Environment first, then config, then a SQLite file under <results>/mlflow/; a relative
    SQLite store resolved against the working directory (store_uri)."""
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return store_uri(os.environ["MLFLOW_TRACKING_URI"])
    if configured:
        return store_uri(configured)
    db = Path(results, "mlflow", "mlflow.db").resolve()
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


def store_uri(uri: str, workdir: str | Path | None = None) -> str:
    """The store a published tracking URI names, as MLflow opens it from anywhere: a relative
    SQLite store (`sqlite:///results/mlflow/mlflow.db`, as cards and mlflow_run.json hold it)
    resolved against `workdir`, the working directory of the workflow that wrote it (default: this
    process's); any other URI unchanged. Every reader of a card's `mlflow.tracking_uri` goes
    through here."""
    if not uri.startswith("sqlite:///") or uri.startswith("sqlite:////") or uri == "sqlite:///:memory:":
        return uri
    rel = uri.removeprefix("sqlite:///")
    return f"sqlite:///{os.path.abspath(Path(workdir or Path.cwd(), rel))}"


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """Serialise store creation/migration and experiment creation between processes (SQLite only:
    a server serialises requests itself)."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    from filelock import FileLock

    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=600):
        yield


_READY: set[str] = set()  # stores this process has opened (created/migrated) already


def client(uri: str) -> Any:
    """An MlflowClient on the tracking store `uri` and its registry. The first open of a SQLite
    store in a process creates/migrates the database: under the lock, so that jobs starting at the
    same time on a fresh store do not run the migrations twice."""
    from mlflow.tracking import MlflowClient

    if uri in _READY:
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
    with _store_lock(uri):
        c = MlflowClient(tracking_uri=uri, registry_uri=uri)  # opens the tracking store
        c.search_registered_models(max_results=1)  # and the (lazily opened) registry store
    _READY.add(uri)
    return c


def _use(uri: str) -> None:
    """Point MLflow's fluent API at `uri` without exporting it: mlflow.set_tracking_uri also sets
    MLFLOW_TRACKING_URI, which `tracking_uri` lets win, so one process logging to two stores (a
    test session, `aquaflow predict`) would send the second store's runs to the first."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


def ensure_experiment(uri: str, experiment: str) -> str:
    """The experiment's id, creating it if needed; concurrent callers all get the same one."""
    from mlflow.exceptions import MlflowException

    _use(uri)
    c = client(uri)
    with _store_lock(uri):
        found = c.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        db = _sqlite_path(uri)
        location = db.parent.joinpath("artifacts").as_uri() if db else None
        try:
            return c.create_experiment(experiment, artifact_location=location)
        except MlflowException:  # another process (on a server) created it first
            for _ in range(20):
                found = c.get_experiment_by_name(experiment)
                if found is not None:
                    return found.experiment_id
                time.sleep(0.25)
            raise


@contextlib.contextmanager
def run(
    uri: str, experiment: str, run_name: str | None = None, run_id: str | None = None
) -> Iterator[mlflow.ActiveRun]:
    """Start (or resume, with run_id) a run; local stores keep artifacts next to the database."""
    exp_id = ensure_experiment(uri, experiment)
    with mlflow.start_run(
        run_name=run_name, run_id=run_id, experiment_id=None if run_id else exp_id
    ) as active:
        yield active


def log_params(params: dict[str, Any]) -> None:
    """Log flattened params, every remote URI without credentials or query (aquaflow.io.redact_uri)."""
    flat = {k: redact_uri("" if v is None else str(v))[:6000] for k, v in flatten(params).items()}
    items = list(flat.items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))


def registered_name(template: str | None, usecase: str) -> str | None:
    """The registry name of a use case's model (`mlflow.registered_model`, `{uc}` filled in)."""
    return template.replace("{uc}", usecase) if template else None


def log_model_folder(weights: str | Path, card_path: str | Path, folders: Sequence[str | Path] = ()) -> None:
    """In the active run: the model folder (weights + `model_card.json`, whatever the card file's
    local name, + the subfolders `folders` the backend needs) as artifact path `model`, the folder
    a registry version points at."""
    mlflow.log_artifact(str(weights), MODEL_ARTIFACT)
    for folder in folders:
        mlflow.log_artifacts(str(folder), f"{MODEL_ARTIFACT}/{Path(folder).name}")
    if Path(card_path).name == MODEL_CARD:
        mlflow.log_artifact(str(card_path), MODEL_ARTIFACT)
        return
    with tempfile.TemporaryDirectory() as tmp:
        renamed = Path(tmp, MODEL_CARD)
        shutil.copyfile(card_path, renamed)
        mlflow.log_artifact(str(renamed), MODEL_ARTIFACT)


def register_model(
    name: str,
    weights: str | Path,
    card: dict[str, Any],
    card_path: str | Path,
    folders: Sequence[str | Path] = (),
) -> Any:
    """In the active run: log the model folder (card + weights [+ folders]) as artifact path `model`
    and register `runs:/<run_id>/model` as a new version of `name`, described by the model card."""
    from mlflow.exceptions import MlflowException

    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("register_model needs an active MLflow run")
    log_model_folder(weights, card_path, folders)
    uri = mlflow.get_tracking_uri()
    # the registry of the tracking store, whatever MLFLOW_REGISTRY_URI a parent process left
    c = client(uri)
    with _store_lock(uri):  # version numbers: one writer at a time on SQLite
        try:
            c.create_registered_model(
                name, description=f"aquaflow {card.get('task', 'classify')} model ({card.get('arch')})"
            )
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and exc.error_code not in (
                "RESOURCE_ALREADY_EXISTS",
                "ALREADY_EXISTS",
            ):
                raise
        run_id = active.info.run_id
        tags = {
            "model_id": card["id"],
            "arch": str(card.get("arch")),
            "task": str(card.get("task")),
            "backend": str(card.get("backend")),
            "classes": str(len(card.get("classes", []))),
            "input_size": str(card.get("input_size")),
            "usecase": str(card.get("usecase", "")),
        }
        description = f"Model card ({MODEL_ARTIFACT}/{MODEL_CARD}):\n" + _card_summary(card)
        version = c.create_model_version(
            name, source=f"runs:/{run_id}/{MODEL_ARTIFACT}", run_id=run_id, tags=tags, description=description
        )
    mlflow.set_tags({"registered_model": name, "registered_version": version.version})
    log.info("registered %s version %s (model %s)", name, version.version, card["id"][:16])
    return version


def metric_key(name: Any) -> str:
    """A metric name MLflow accepts: characters outside [alphanumerics _ - . / space :] dropped
    (Ultralytics' `metrics/mAP50(B)` -> `metrics/mAP50B`, as its own MLflow callback names it)."""
    return _BAD_METRIC_CHARS.sub("", str(name)).strip()


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(value)


def epoch_metrics(history: pd.DataFrame) -> list[Any]:
    """Every finite number of a training history as MLflow metrics, step = the `epoch` column
    (else the row number from 1); one metric per other column."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    steps = history["epoch"].astype(int) if "epoch" in history else range(1, len(history) + 1)
    out = []
    for step, row in zip(steps, history.to_dict("records"), strict=True):
        for key, value in row.items():
            if key != "epoch" and _finite(value):
                out.append(Metric(metric_key(key), float(value), now, int(step)))
    return out


def log_training(
    *,
    usecase: str,
    card: dict[str, Any],
    card_path: str | Path,
    weights: str | Path,
    params: dict[str, Any],
    history: pd.DataFrame,
    mlflow_cfg: dict[str, Any],
    metrics: dict[str, float] | None = None,
    artifacts: Sequence[str | Path] = (),
    started: float | None = None,
    write_card: Callable[[dict[str, Any], str | Path], Any] = write_json,
    folders: Sequence[str | Path] = (),
) -> dict[str, Any]:
    """The MLflow training run of any backend, from what its trainer wrote: tags (use case, step,
    backend, task, model id), params (flattened), per-epoch `history` (step = epoch), summary
    `metrics`, the card (written to `card_path` with `usecase` and `mlflow` {tracking_uri, run_id}
    added) and `artifacts` at the top level, the model folder as artifact `model`, and a version
    of it in the registry under `mlflow.registered_model` (null: the folder is logged, no version).
    `started` (epoch seconds) is the run's start time, so its duration is the training's;
    `write_card` writes the card (trainers pass `aquaflow.models.artifacts.write_card`, which
    validates it against the model-card schema); `folders`: subfolders of the model folder it needs
    (a CLAP audio tower), logged inside `model`. Returns the card as written."""
    uri = tracking_uri(mlflow_cfg.get("tracking_uri"), mlflow_cfg["results"])
    experiment = ensure_experiment(uri, mlflow_cfg["experiment"])
    c = client(uri)
    tags = {
        "usecase": usecase,
        "step": "train",
        "backend": str(card.get("backend")),
        "task": str(card.get("task")),
        "model_id": card["id"],
    }
    created = c.create_run(
        experiment,
        start_time=int(started * 1000) if started else None,
        tags=tags,
        run_name=f"{usecase}-train",
    )
    run_id = created.info.run_id
    with mlflow.start_run(run_id=run_id):
        log_params(params)
        batch = epoch_metrics(history)
        for i in range(0, len(batch), 1000):  # MLflow's limit per log_batch call
            c.log_batch(run_id, metrics=batch[i : i + 1000])
        mlflow.log_metrics({metric_key(k): float(v) for k, v in (metrics or {}).items() if _finite(v)})
        # published: no credentials, a local store relative to the working directory (public_uri)
        card = {**card, "usecase": usecase, "mlflow": {"tracking_uri": public_uri(uri), "run_id": run_id}}
        write_card(card, card_path)
        for path in (card_path, *artifacts):
            mlflow.log_artifact(str(path))
        name = registered_name(mlflow_cfg.get("registered_model", "aquaflow_{uc}"), usecase)
        if name:
            register_model(name, weights, card, card_path, folders)
        else:
            log_model_folder(weights, card_path, folders)
    log.info("training run %s of %s (model %s) in %s", run_id, usecase, card["id"][:16], uri)
    return card


def log_evaluation(
    card: dict[str, Any],
    metrics: dict[str, Any],
    artifact_path: str,
    mlflow_cfg: dict[str, Any],
    files: Sequence[str | Path] = (),
    dicts: dict[str, Any] | None = None,
) -> str | None:
    """Held-out figures (the finite numbers of `metrics`) plus files and dicts under `artifact_path`:
    into the run that trained the model when it was trained here against this store, else (a given
    model) into an evaluation run of its own. A store that refuses is a warning; returns the run id."""
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(mlflow_cfg.get("tracking_uri"), mlflow_cfg["results"])
    tracked = card.get("mlflow") or {}
    # the card holds the store's URI as published: no credentials, a local store relative
    published = store_uri(tracked.get("tracking_uri") or "")
    trained_here = published in (uri, redact_uri(uri)) and not card.get("imported_from")
    run_id = tracked.get("run_id") if trained_here else None
    run_name = None if run_id else f"{card.get('usecase', 'model')}-evaluate"
    try:
        with run(uri, mlflow_cfg["experiment"], run_name=run_name, run_id=run_id) as active:
            if run_id is None:
                mlflow.set_tags({"step": "evaluate", "model_id": card["id"]})
            mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items() if _finite(v)})
            for path in files:
                mlflow.log_artifact(str(path), artifact_path=artifact_path)
            for name, value in (dicts or {}).items():
                mlflow.log_dict(value, f"{artifact_path}/{name}")
            return active.info.run_id
    except MlflowException as exc:  # e.g. another tracking server than at training time
        log.warning("could not log the evaluation to MLflow (run %s): %s", run_id, exc)
        return None


def _card_summary(card: dict[str, Any]) -> str:
    keys = ("id", "arch", "task", "backend", "input_size", "classes", "metrics", "usecase")
    return "\n".join(f"- {k}: {card[k]}" for k in keys if k in card)


def _registry_version(client: Any, uri: str) -> Any:
    """The ModelVersion a `models:/<name>/<version>` or `models:/<name>@<alias>` reference names."""
    ref = uri.removeprefix("models:/")
    if not uri.startswith("models:/") or not ref:
        raise ValueError(
            f"not a registry model reference: {uri!r} (models:/<name>/<version> or models:/<name>@<alias>)"
        )
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return client.get_model_version_by_alias(name, alias)
    name, _, version = ref.partition("/")
    return client.get_model_version(name, version)


def download_registered_model(uri: str, dest_dir: str | Path, tracking: str) -> Path:
    """Download `models:/<name>/<version>` or `models:/<name>@<alias>` from the registry of the
    tracking store `tracking` into dest_dir; returns the folder holding model_card.json + weights."""
    c = client(tracking)
    mv = _registry_version(c, uri)
    source = c.get_model_version_download_uri(mv.name, mv.version)
    Path(dest_dir).mkdir(parents=True, exist_ok=True)
    return Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=source, dst_path=str(dest_dir), tracking_uri=tracking
        )
    )


def model_version_of(card: dict[str, Any], tracking: str) -> dict[str, str]:
    """Registry name/version of the model a card describes: the `models:/` reference it was
    imported from, else the version registered by the training run that made it (if any)."""
    spec = card.get("imported_from") or {}
    uri = spec.get("uri") or ""
    try:
        c = client(tracking)
        if uri.startswith("models:/"):
            mv = _registry_version(c, uri)
            return {"model_uri": uri, "registered_model": mv.name, "model_version": str(mv.version)}
        run_id = (card.get("mlflow") or {}).get("run_id")
        if run_id:
            found = c.search_model_versions(f"run_id = '{run_id}'")
            if found:
                mv = max(found, key=lambda v: int(v.version))
                return {
                    "model_uri": f"models:/{mv.name}/{mv.version}",
                    "registered_model": mv.name,
                    "model_version": str(mv.version),
                }
    except Exception as exc:  # the registry may be unreachable from where the card was made
        log.warning("could not resolve the registry version of model %s: %s", card.get("id"), exc)
    return {"model_uri": uri or "", "registered_model": "", "model_version": ""}


def attach_to_training_run(
    card: dict[str, Any], files: list[str | Path], artifact_path: str, mlflow_cfg: dict[str, Any]
) -> bool:
    """Log files into the MLflow run that trained the model (drift reference, ...). False when the
    model was not trained here or its run is not in this tracking store."""
    run_id = (card.get("mlflow") or {}).get("run_id")
    if not run_id:
        return False
    uri = tracking_uri(mlflow_cfg.get("tracking_uri"), mlflow_cfg["results"])
    try:
        c = client(uri)
        c.get_run(run_id)
    except Exception as exc:
        log.warning("training run %s not found in %s (%s): not attaching %s", run_id, uri, exc, artifact_path)
        return False
    for f in files:
        c.log_artifact(run_id, str(f), artifact_path)
    return True


def log_inference(
    *,
    usecase: str,
    campaign: str,
    card: dict[str, Any],
    summary: dict[str, Any],
    drift: dict[str, Any] | None,
    mlflow_cfg: dict[str, Any],
    out: str | Path,
) -> dict[str, Any]:
    """One MLflow run per campaign inference, for every task: model (id, registry name/version),
    counts, throughput, drift summary; writes {run_id, tracking_uri, ...} to `out`. Classifiers log
    images per predicted class (`predicted.<class>`), detectors the detections (`detections`,
    `detections.<class>`: their summary's per_class counts objects, not images), semantic models
    pixels and m² per class (`pixels.<class>`, `area_m2.<class>`)."""

    uri = tracking_uri(mlflow_cfg.get("tracking_uri"), mlflow_cfg["results"])
    model = model_version_of(card, uri)
    shard_seconds = sum(float(s.get("seconds", 0.0)) for s in summary.get("shards", {}).values())
    metrics: dict[str, float] = {
        "images_seen": summary["seen"],
        "images_predicted": summary["predicted"],
        "images_rejected": summary["rejected"],
        "shard_seconds": shard_seconds,
        "images_per_second": summary["seen"] / shard_seconds if shard_seconds > 0 else 0.0,
    }
    metrics |= {f"rejected.{k}": v for k, v in summary.get("rejected_by_reason", {}).items()}
    per_class = summary.get("per_class", {})
    if card.get("task", "classify") == "classify":
        metrics |= {f"predicted.{k}": v for k, v in per_class.items()}
    elif card.get("task") == "semantic":  # per_class counts pixels; area in m² where projected
        metrics |= {f"pixels.{k}": v for k, v in per_class.items()}
        metrics |= {f"area_m2.{k}": v for k, v in (summary.get("area_m2") or {}).items() if v is not None}
    else:
        metrics["detections"] = sum(per_class.values())
        metrics |= {f"detections.{k}": v for k, v in per_class.items()}
    if drift is not None:
        ov = drift["overall"]
        metrics |= {
            "drift.batches_tested": ov["tested_batches"],
            "drift.batches_drifted": len(ov["drifted_batches"]),
            "drift.overall": float(bool(ov.get("drift"))),
        }
        for test, r in (ov.get("tests") or {}).items():
            metrics[f"drift.overall.{test}.p_adjusted"] = r["p_adjusted"]
    with run(uri, mlflow_cfg["experiment"], run_name=f"{usecase}-{campaign}-inference") as active:
        mlflow.set_tags(
            {"usecase": usecase, "campaign": campaign, "step": "inference", "model_id": card["id"]}
            | {k: v for k, v in model.items() if v}
        )
        log_params(
            {
                "model": {
                    "id": card["id"],
                    "arch": card.get("arch"),
                    "task": card.get("task", "classify"),
                    **model,
                },
                "campaign": campaign,
            }
        )
        mlflow.log_metrics({k.replace(" ", "_"): float(v) for k, v in metrics.items()})
        mlflow.log_dict(summary, "summary.json")
        if drift is not None:
            mlflow.log_dict(drift, "drift/drift.json")
            mlflow.set_tag("drifted_batches", ",".join(drift["overall"]["drifted_batches"])[:5000])
        info = redacted(
            {
                "run_id": active.info.run_id,
                "tracking_uri": public_uri(uri),
                "experiment": mlflow_cfg["experiment"],
                **model,
            }
        )
    write_json(info, out)
    return info
