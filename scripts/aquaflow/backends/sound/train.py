"""Training of both sound backends on labelled recordings (a folder + truth.csv).

truth.csv has one row per window: file, window (index as `aquaflow.data.audio.windows` numbers
them), label, distance_bin (-1: unknown / no vessel). Recordings are split by file (never windows
of one recording on both sides), per class, with the seed. Features are computed file by file
(log-mel for `sound_cnn`; CLAP embeddings for `clap`, cached per window on disk keyed by the
tower, the file's SHA-256 and the window settings). The loss is cross-entropy on the classes plus
the CORAL loss on the distance bins of the windows whose distance is known. The epoch with the
lowest validation loss is kept; the test split gives the card's metrics.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from coral_pytorch.dataset import levels_from_labelbatch
from coral_pytorch.losses import coral_loss

from aquaflow.backends.sound.features import MEL_DEFAULTS, log_mel
from aquaflow.backends.sound.model import CLAP_FOLDER, build
from aquaflow.backends.torch_model import library_versions, save_weights
from aquaflow.backends.torch_train import seed_everything
from aquaflow.data import audio
from aquaflow.io import atomic_path, sha256_file, write_json, write_tsv
from aquaflow.models.artifacts import write_card
from aquaflow.tasks import intervals
from aquaflow.tasks.sound.metrics import coral_outputs, figure_intervals, figures

log = logging.getLogger(__name__)


def split_files(truth: pd.DataFrame, val: float, test: float, seed: int) -> dict[str, str]:
    """file -> train | val | test, per class of the file's first window: a class with two files
    or more gives test one, with three or more val one too (empty val: the train split chooses
    the epoch; empty test: val, then train, gives the card's metrics)."""
    rng = np.random.default_rng(seed)
    out = {}
    first = truth.groupby("file", sort=True)["label"].first()
    for _, group in first.groupby(first):
        names = list(group.index)
        rng.shuffle(names)
        n_test = max(1, round(len(names) * test)) if len(names) >= 2 and test > 0 else 0
        n_val = max(1, round(len(names) * val)) if len(names) >= 3 and val > 0 else 0
        for i, name in enumerate(names):
            out[name] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
    return out


def _cache_key(path: Path, spec: audio.WindowSpec, tower_id: str) -> str:
    blob = json.dumps([sha256_file(path), tower_id, spec.__dict__], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


def file_features(path: Path, spec: audio.WindowSpec, featurize, batch: int = 32) -> np.ndarray:
    """Features of every window of one recording, computed `batch` windows at a time."""
    out, chunk = [], []
    for w in audio.windows(path, spec):
        chunk.append(w.samples)
        if len(chunk) == batch:
            out.append(featurize(np.stack(chunk)))
            chunk = []
    if chunk:
        out.append(featurize(np.stack(chunk)))
    return np.concatenate(out)


def labelled_features(
    folder: Path, truth: pd.DataFrame, spec: audio.WindowSpec, featurize, cache: Path | None, tower_id: str
) -> tuple[np.ndarray, pd.DataFrame]:
    """Features of the labelled windows (rows of `truth` in its order) and the matching rows;
    a window the recording does not give (or a truth row of none) is an error naming both."""
    feats, rows = [], []
    for name, part in truth.groupby("file", sort=True):
        path = folder / name
        cached = cache / f"{_cache_key(path, spec, tower_id)}.npy" if cache else None
        if cached is not None and cached.is_file():
            f = np.load(cached)
        else:
            f = file_features(path, spec, featurize)
            if cached is not None:
                cached.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(cached) as tmp, open(tmp, "wb") as fh:
                    np.save(fh, f)
        idx = part["window"].to_numpy()
        if idx.max() >= len(f):
            raise ValueError(f"{name}: truth names window {idx.max()}, the recording gives {len(f)}")
        feats.append(f[idx])
        rows.append(part)
    return np.concatenate(feats), pd.concat(rows, ignore_index=True)


def _loss(net, x, y_cls, y_bin, n_bins):
    logits, coral = net(x)
    loss = torch.nn.functional.cross_entropy(logits, y_cls)
    known = y_bin >= 0
    if known.any():
        levels = levels_from_labelbatch(y_bin[known], num_classes=n_bins)
        loss = loss + coral_loss(coral[known], levels)
    return loss, logits, coral


def fit(net, data: dict[str, tuple], edges: list[float], cfg: dict[str, Any]) -> tuple[pd.DataFrame, dict]:
    """Adam on the train split; returns the history and the state of the best validation epoch."""
    n_bins = len(edges)
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
    x, yc, yb = data["train"]
    best, best_state, history = float("inf"), None, []
    gen = torch.Generator().manual_seed(int(cfg["seed"]))
    for epoch in range(1, int(cfg["epochs"]) + 1):
        net.train()
        total, right = 0.0, 0
        for idx in torch.randperm(len(x), generator=gen).split(int(cfg["batch"])):
            if len(idx) < 2 and len(x) > 1:
                continue  # BatchNorm needs two samples
            loss, logits, _ = _loss(net, x[idx], yc[idx], yb[idx], n_bins)
            right += int((logits.argmax(1) == yc[idx]).sum())
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        net.eval()
        with torch.no_grad():
            split = "val" if len(data["val"][0]) else "train"
            vl, logits, coral = _loss(net, *data[split], n_bins)
        _, _, expected = coral_outputs(coral.numpy())
        f = figures(
            data[split][1].numpy(), logits.softmax(1).numpy(), data[split][2].numpy(), expected, edges
        )
        history.append(
            {
                "epoch": epoch,
                "train_loss": total / len(x),
                "val_loss": float(vl),
                "train_acc": right / len(x),
                "val_acc": f["accuracy"],
                "val_macro_f1": f["macro_f1"],
                "val_rmse_bins": f.get("rmse_bins", float("nan")),
            }
        )
        log.info("epoch %d: %s", epoch, history[-1])
        if float(vl) < best:
            best, best_state = float(vl), {k: v.detach().clone() for k, v in net.state_dict().items()}
    return pd.DataFrame(history), best_state


def evaluate(
    net, data: tuple, edges_km: list[float], interval: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The figures of `data` (tasks.sound.metrics.figures) and, with `interval` settings, their
    bootstrap intervals (an `intervals` block)."""
    x, yc, yb = data
    with torch.no_grad():
        logits, coral = net.eval()(x)
    _, _, expected = coral_outputs(coral.numpy())
    arrays = (yc.numpy(), logits.softmax(1).numpy(), yb.numpy(), expected)
    out = figures(*arrays, edges_km)
    if interval is not None:
        out["intervals"] = figure_intervals(*arrays, edges_km, interval)
    return out


def _featurizer(settings: dict[str, Any], spec: audio.WindowSpec, work: Path):
    """(featurize(windows) -> features, tower id, tower) of the backend."""
    if settings["backend"] == "clap":
        from aquaflow.backends.sound.clap import ClapTower

        tower = ClapTower(settings["clap"]["path"])
        if tower.sample_rate != spec.sample_rate:
            raise ValueError(
                f"audio.sample_rate {spec.sample_rate} != the CLAP feature extractor's {tower.sample_rate}"
            )
        return tower.embed, tower.id, tower
    mel = {**MEL_DEFAULTS, **settings.get("mel", {})}
    return (lambda w: log_mel(w, spec.sample_rate, mel)), "", None


def train(
    settings: dict[str, Any], data_folder: str | Path, out: dict[str, str | Path], work: str | Path
) -> dict:
    """Train the configured backend; writes out[weights|card|history|metrics] (+ the CLAP tower
    copied to clap/ beside the weights) and returns the card."""
    t0 = time.time()
    cfg, work = settings["training"], Path(work)
    folder = Path(data_folder) / settings.get("data", ".")
    seed_everything(int(cfg["seed"]))
    torch.set_num_threads(int(settings.get("threads", 1)))
    spec = audio.WindowSpec.from_config(settings["audio"])
    truth = pd.read_csv(folder / settings["truth"])
    classes, edges = list(settings["classes"]), list(settings["distance_edges_km"])
    unknown = sorted(set(truth["label"]) - set(classes))
    if unknown:
        raise ValueError(f"truth labels {unknown} are not among the classes {classes}")
    featurize, tower_id, tower = _featurizer(settings, spec, work)
    cache = work / "embeddings" if tower is not None else None
    feats, table = labelled_features(folder, truth, spec, featurize, cache, tower_id)
    splits = split_files(truth, cfg["val_fraction"], cfg["test_fraction"], int(cfg["seed"]))
    table["split"] = table["file"].map(splits)
    data = {}
    for s in ("train", "val", "test"):
        m = (table["split"] == s).to_numpy()
        data[s] = (
            torch.from_numpy(feats[m]).float(),
            torch.tensor(table.loc[m, "label"].map(classes.index).to_numpy(dtype="int64"), dtype=torch.long),
            torch.tensor(table.loc[m, "distance_bin"].fillna(-1).astype(int).to_numpy(), dtype=torch.long),
        )
    card = {
        "format": "safetensors",
        "weights": Path(out["weights"]).name,
        "backend": settings["backend"],
        "task": "sound",
        "arch": settings["arch"] if tower is None else f"clap:{tower_id[:16]}",
        "classes": classes,
        "input_size": int(spec.length),
        "normalization": {},
        "preprocessing": "mono windows resampled to audio.sample_rate; log-mel dB (sound_cnn) or CLAP",
        "audio": {
            **{k: v for k, v in spec.__dict__.items()},
            "mel": {**MEL_DEFAULTS, **settings.get("mel", {})},
            "distance_edges_km": edges,
            "embedding_dim": int(feats.shape[1]) if tower is not None else 0,
            "hidden": int(settings.get("hidden", 64)),
            **({"clap_id": tower_id} if tower is not None else {}),
        },
    }
    net = build(card)
    train_x = data["train"][0]
    if tower is None:
        net.mean.fill_(float(train_x.mean()))
        net.std.fill_(float(train_x.std()) or 1.0)
    else:
        net.mean.copy_(train_x.mean(0))
        net.std.copy_(train_x.std(0).clamp_min(1e-6))
    history, state = fit(net, data, edges, cfg)
    net.load_state_dict(state)
    held_out = next(data[s] for s in ("test", "val", "train") if len(data[s][0]))
    test = evaluate(net, held_out, edges, settings.get("intervals", {}))
    with atomic_path(out["weights"]) as tmp:
        save_weights(net, tmp)
    if tower is not None:
        dest = Path(out["weights"]).parent / CLAP_FOLDER
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(tower.folder, dest)
    write_tsv(history, out["history"])
    counts = table.groupby("split").size().to_dict()
    card |= {
        "id": sha256_file(out["weights"]),
        "training": {
            "config": cfg,
            "windows": {k: int(v) for k, v in counts.items()},
            "files": {s: sorted(f for f, v in splits.items() if v == s) for s in ("train", "val", "test")},
            "best_epoch": int(history["val_loss"].idxmin()) + 1,
            "seconds": round(time.time() - t0, 1),
        },
        "metrics": {
            **{f"test_{k}": v for k, v in test.items() if k != "intervals"},
            **{f"test_{k}": v for k, v in intervals.flat(test["intervals"]).items()},
        },
        "libraries": library_versions(),
    }
    write_json(test, out["metrics"])
    write_card(card, out["card"])
    return card


def run(
    *,
    name: str,
    settings: dict[str, Any],
    data_folder: str | Path,
    out: dict[str, str | Path],
    work: str | Path,
    mlflow_cfg: dict[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """The train_sound step: train, plot the curve, log the MLflow training run (registered as
    every trainer's model), write the card with the run id."""
    import pandas as pd

    from aquaflow import plots
    from aquaflow.monitoring import tracking

    started = time.time()
    card = train({**settings, "threads": threads}, data_folder, out, work)
    tower = Path(out["weights"]).parent / CLAP_FOLDER
    history = pd.read_csv(out["history"], sep="\t")
    plots.training_curve(history, out["curve"])
    return tracking.log_training(
        usecase=name,
        card=card,
        card_path=out["card"],
        weights=out["weights"],
        params=settings,
        history=history,
        mlflow_cfg=mlflow_cfg,
        metrics=card["metrics"],
        artifacts=[out["history"], out["curve"], out["metrics"]],
        started=started,
        write_card=write_card,
        folders=[tower] if card["backend"] == "clap" else [],  # the registry version holds the tower
    )
