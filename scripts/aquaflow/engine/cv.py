"""k-fold cross-validation of a use case's own recipe (the `cv` target).

Every labelled image of the prepared manifest (all splits pooled) gets a fold, stratified by
class and, with a grouping, keeping each group (a sample's images) in one fold. Fold f trains the
use case's recipe with fold f held out as test, fold f+1 as validation (early stopping) and the
rest as training, then predicts fold f: out-of-fold probabilities for every labelled image. The
pooled out-of-fold figures, with bootstrap intervals, estimate what the recipe gives on new data
of this kind; the per-fold figures show how much one split can differ from the next. The shipped
model's own figures on every labelled image (in-sample for its training split) are written beside
them: a shipped model that does worse on its own data than the estimate says was trained badly.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from aquaflow.backends import load_predictor, train_classifier
from aquaflow.io import read_json, write_json, write_parquet, write_tsv
from aquaflow.monitoring import tracking
from aquaflow.tasks import intervals
from aquaflow.tasks.classify.metrics import classification_metrics
from aquaflow.tasks.intervals import summary_table

log = logging.getLogger(__name__)


def groups_of(paths: pd.Series, group: str | None) -> pd.Series | None:
    """Each image's group: None (every image its own), `folder` (the folder holding it) or a
    regular expression whose first capture group, searched in the path, names it."""
    if not group:
        return None
    if group == "folder":
        return paths.map(lambda p: str(Path(p).parent))
    pattern = re.compile(group)
    found = paths.map(lambda p: (m := pattern.search(p)) and m.group(1))
    if found.isna().any():
        raise ValueError(f"cv.group {group!r} matches no group in {paths[found.isna()].iloc[0]!r}")
    return found


def assign_folds(manifest: pd.DataFrame, k: int, seed: int = 0, group: str | None = None) -> pd.DataFrame:
    """The manifest with a `fold` column (0..k-1), stratified by label, grouped when asked."""
    groups = groups_of(manifest["path"], group)
    if groups is not None and groups.nunique() < k:
        raise ValueError(f"cv.folds is {k} but cv.group finds only {groups.nunique()} groups")
    if manifest["label"].value_counts().max() < k:
        raise ValueError(f"cv.folds is {k} but no class has {k} images")
    splitter = (
        StratifiedGroupKFold(k, shuffle=True, random_state=seed)
        if groups is not None
        else StratifiedKFold(k, shuffle=True, random_state=seed)
    )
    fold = np.full(len(manifest), -1)
    for f, (_, test) in enumerate(splitter.split(manifest["path"], manifest["label"], groups)):
        fold[test] = f
    return manifest.assign(fold=fold, group=groups if groups is not None else manifest["path"])


def fold_manifest(folds: pd.DataFrame, f: int) -> pd.DataFrame:
    """The manifest fold f trains on: fold f = test, the next fold = val, the others = train."""
    k = int(folds["fold"].max()) + 1
    split = np.where(folds["fold"] == f, "test", np.where(folds["fold"] == (f + 1) % k, "val", "train"))
    return folds.drop(columns=["fold", "group"]).assign(split=split)


def train_fold(
    *,
    uc: str,
    fold: int,
    backend: str,
    weights_name: str,
    settings: dict[str, Any],
    eval_settings: dict[str, Any],
    raw: str | Path,
    folds_path: str | Path,
    classes_path: str | Path,
    out: dict[str, str | Path],
    mlflow_cfg: dict[str, Any],
    pretrained_file: str | Path | None = None,
    threads: int = 1,
    log_stream=None,
) -> pd.DataFrame:
    """Train the recipe (`settings`: the train step's) with the use case's `backend` on fold
    `fold`'s training folds (MLflow training run `<uc>-cv<fold>`, not registered), predict its
    held-out fold as the evaluate step does (`eval_settings`); writes the fold's manifest, model
    folder (`out["model"]`: `weights_name`, card, history, curve) and out-of-fold predictions."""
    manifest = fold_manifest(pd.read_parquet(folds_path), fold)
    write_parquet(manifest, out["manifest"])
    model = Path(out["model"])
    model.mkdir(parents=True, exist_ok=True)
    files = {
        "weights": weights_name,
        "card": "model_card.json",
        "history": "history.tsv",
        "curve": "training_curve.png",
    }
    model_out = {k: model / name for k, name in files.items()}
    train_classifier(
        backend,
        name=f"{uc}-cv{fold}",
        settings=settings,
        raw=raw,
        manifest_path=out["manifest"],
        classes_path=classes_path,
        out=model_out,
        pretrained_file=pretrained_file,
        mlflow_cfg={**mlflow_cfg, "registered_model": None},
        threads=threads,
        log_stream=log_stream,
        work=model.parent / "work",
    )
    card = read_json(model_out["card"])
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    probs = _probabilities(model_out["weights"], card, test, raw, eval_settings, threads, log_stream)
    oof = test[["id", "path", "label"]].assign(fold=fold)
    oof = pd.concat([oof, pd.DataFrame(probs, columns=[f"p_{c}" for c in card["classes"]])], axis=1)
    write_parquet(oof, out["predictions"])
    return oof


def _probabilities(
    weights: str | Path,
    card: dict[str, Any],
    rows: pd.DataFrame,
    raw: str | Path,
    eval_settings: dict[str, Any],
    threads: int,
    log_stream=None,
) -> np.ndarray:
    """The model's class probabilities for `rows` of a manifest, as the evaluate step predicts them."""
    from aquaflow.engine.evaluate import predict_split  # here: the folds and gather steps need no model

    safe = eval_settings.get("safe_mode", True)
    predictor = load_predictor(weights, card, eval_settings["device"], threads, safe_mode=safe)
    images = Path(raw) / eval_settings["images"]
    probs, _ = predict_split(rows, images, predictor, eval_settings["batch_size"], log_stream)
    return probs


def shipped_predictions(
    *,
    weights: str | Path,
    card_path: str | Path,
    manifest_path: str | Path,
    raw: str | Path,
    eval_settings: dict[str, Any],
    out: str | Path,
    threads: int = 1,
    log_stream=None,
) -> pd.DataFrame:
    """The shipped model's probabilities for every labelled image, each with its split."""
    manifest = pd.read_parquet(manifest_path).reset_index(drop=True)
    card = read_json(card_path)
    probs = _probabilities(weights, card, manifest, raw, eval_settings, threads, log_stream)
    table = manifest[["id", "path", "label", "split"]]
    table = pd.concat([table, pd.DataFrame(probs, columns=[f"p_{c}" for c in card["classes"]])], axis=1)
    write_parquet(table, out)
    return table


def _labels_and_probs(table: pd.DataFrame, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    index = {c: i for i, c in enumerate(classes)}
    return table["label"].map(index).to_numpy(), table[[f"p_{c}" for c in classes]].to_numpy()


def shipped_figures(table: pd.DataFrame, classes: list[str], interval: dict[str, Any]) -> dict[str, Any]:
    """Accuracy and macro-F1 of the shipped model on all labelled images (with intervals) and per
    split: the in-sample check that it is at least as good as the cross-validation estimate."""
    y, probs = _labels_and_probs(table, classes)
    every = classification_metrics(y, probs, classes, interval=interval)
    out: dict[str, Any] = {
        "n": every["n"],
        "accuracy": every["accuracy"],
        "macro_f1": every["macro_f1"],
        "intervals": {
            k: every["intervals"][k] for k in ("accuracy", "macro_f1") if k in every.get("intervals", {})
        },
        "by_split": {},
    }
    for split, part in table.groupby("split"):
        m = classification_metrics(y[part.index], probs[part.index], classes)
        out["by_split"][str(split)] = {"n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    return out


def gather(
    *,
    uc: str,
    predictions: list[str | Path],
    classes_path: str | Path,
    interval: dict[str, Any],
    out: dict[str, str | Path],
    mlflow_cfg: dict[str, Any],
    shipped: str | Path | None = None,
) -> dict[str, Any]:
    """Pooled out-of-fold figures with intervals, and each fold's; metrics.json, summary.tsv,
    folds.tsv and out-of-fold predictions, logged to MLflow as run `<uc>-cv`. With `shipped`
    (shipped_predictions' table), metrics.json also holds the shipped model's own figures."""
    classes = list(read_json(classes_path)["classes"])
    oof = pd.concat([pd.read_parquet(p) for p in predictions], ignore_index=True)
    y, probs = _labels_and_probs(oof, classes)
    pooled = classification_metrics(y, probs, classes, interval=interval)
    per_fold = []
    for f, part in oof.groupby("fold"):
        m = classification_metrics(y[part.index], probs[part.index], classes)
        per_fold.append({"fold": int(f), "n": m["n"], "accuracy": m["accuracy"], "macro_f1": m["macro_f1"]})
    folds = pd.DataFrame(per_fold)
    metrics = {
        "k": len(per_fold),
        "pooled": pooled,
        "folds": per_fold,
        "fold_mean": {k: float(folds[k].mean()) for k in ("accuracy", "macro_f1")},
        "fold_std": {k: float(folds[k].std(ddof=1)) for k in ("accuracy", "macro_f1")},
    }
    if shipped is not None:
        own = shipped_figures(pd.read_parquet(shipped), classes, interval)
        own["at_least_cv_estimate"] = bool(own["accuracy"] >= pooled["accuracy"])
        metrics["shipped_model"] = own
        log.info(
            "shipped model on its %d labelled images: accuracy %.3f (cross-validation estimate %.3f)%s",
            own["n"],
            own["accuracy"],
            pooled["accuracy"],
            "" if own["at_least_cv_estimate"] else ": BELOW the estimate, check its training",
        )
    write_json(metrics, out["metrics"])
    write_tsv(summary_table(pooled), out["summary"])
    write_tsv(folds, out["folds"])
    write_parquet(oof, out["predictions"])
    figures = {**pooled, **intervals.flat(pooled.get("intervals", {}))}
    if "shipped_model" in metrics:
        figures.update({f"shipped_{k}": metrics["shipped_model"][k] for k in ("accuracy", "macro_f1")})
    tracking.log_evaluation(
        {"id": f"cv:{uc}", "usecase": f"{uc}-cv"},
        {f"cv_{k}": v for k, v in figures.items()},
        "cv",
        mlflow_cfg,
        files=[out["summary"], out["folds"]],
    )
    log.info(
        "cross-validation (%d folds): pooled %s",
        len(per_fold),
        {k: pooled[k] for k in ("accuracy", "macro_f1")},
    )
    return metrics
