"""Training of the `smp` backend on georeferenced rasters with label rasters, for a rare class.

Tiles come from a grid over every training raster; tiles holding the rare class are drawn
`oversample` times as often (a weighted sampler). The loss is a weighted sum of cross-entropy
(optionally with class weights "balanced" from the training pixels), Dice and focal terms, all
ignoring nodata labels (255). Flips and 90-degree turns move image and mask together. Per-band
normalisation is computed on the training rasters' valid pixels and stored in the model card.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from aquaflow.backends import smp_model
from aquaflow.backends.torch_model import save_weights
from aquaflow.data.rasters import (
    NODATA_LABEL,
    band_statistics,
    blocks,
    read_labels,
    read_window,
    tile_windows,
)
from aquaflow.io import atomic_path, sha256_file, write_tsv
from aquaflow.models.artifacts import write_card
from aquaflow.tasks.semantic.metrics import SemanticScores

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tile:
    image: str
    labels: str
    row: int
    col: int
    rare: bool


def tile_index(pairs: Sequence[tuple[str, str]], tile: int, stride: int, rare: int | None) -> list[Tile]:
    """The training tiles of (image, label raster) pairs that hold any labelled pixel, each
    marked when it holds the rare class; label windows are read one at a time."""
    import rasterio

    out = []
    for image, labels in pairs:
        with rasterio.open(labels) as src:
            for r, c in tile_windows(src.height, src.width, tile, stride):
                lab = read_labels(src, r, c, tile, tile)
                if (lab != NODATA_LABEL).any():
                    out.append(
                        Tile(str(image), str(labels), r, c, rare is not None and bool((lab == rare).any()))
                    )
    return out


def pixel_counts(pairs: Sequence[tuple[str, str]], n_classes: int, block: int = 1024) -> np.ndarray:
    import rasterio

    counts = np.zeros(n_classes, np.int64)
    for _, labels in pairs:
        with rasterio.open(labels) as src:
            for r, c, h, w in blocks(src.height, src.width, block):
                lab = read_labels(src, r, c, h, w)
                counts += np.bincount(lab[lab < n_classes], minlength=n_classes)[:n_classes]
    return counts


class Tiles(Dataset):
    """(standardised bands C x t x t, labels t x t int64) of each tile; nodata pixels labelled 255."""

    def __init__(self, tiles: list[Tile], tile: int, bands: list[int], norm: dict[str, Any], augment: bool):
        self.tiles, self.tile, self.bands, self.norm, self.augment = tiles, tile, bands, norm, augment
        self._open: dict[str, Any] = {}

    def _src(self, path: str) -> Any:
        import rasterio

        if path not in self._open:
            self._open[path] = rasterio.open(path)
        return self._open[path]

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        t, s = self.tiles[i], self.tile
        x, valid = read_window(self._src(t.image), t.row, t.col, s, s, self.bands, self.norm)
        y = read_labels(self._src(t.labels), t.row, t.col, s, s).astype(np.int64)
        y[~valid] = NODATA_LABEL
        if self.augment:
            k = random.randrange(4)
            x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
            if random.random() < 0.5:
                x, y = x[:, :, ::-1], y[:, ::-1]
        return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


class Loss(torch.nn.Module):
    """weights["ce"] * CE + weights["dice"] * Dice + weights["focal"] * focal, nodata ignored."""

    def __init__(self, weights: dict[str, float], class_weights: torch.Tensor | None):
        super().__init__()
        import segmentation_models_pytorch as smp

        self.weights = {k: float(v) for k, v in weights.items() if v}
        self.ce = torch.nn.CrossEntropyLoss(weight=class_weights, ignore_index=NODATA_LABEL)
        self.dice = smp.losses.DiceLoss("multiclass", ignore_index=NODATA_LABEL)
        self.focal = smp.losses.FocalLoss("multiclass", ignore_index=NODATA_LABEL)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if not (target != NODATA_LABEL).any():  # nothing labelled: no gradient (CE would be NaN)
            return logits.sum() * 0.0
        return sum(w * getattr(self, name)(logits, target) for name, w in self.weights.items())


def _class_weights(setting: str | None, counts: np.ndarray) -> torch.Tensor | None:
    if setting != "balanced":
        return None
    present = np.maximum(counts, 1)
    return torch.tensor(counts.sum() / (len(counts) * present), dtype=torch.float32)


def _evaluate(
    net: torch.nn.Module, loader: DataLoader, classes: list[str], rare: str | None
) -> dict[str, Any]:
    acc = SemanticScores(classes, [1], [rare] if rare else [])
    net.eval()
    with torch.inference_mode():
        for x, y in loader:
            pred = net(x).argmax(1).numpy()
            for p, t in zip(pred, y.numpy(), strict=True):
                acc.add(t.astype(np.uint8), p.astype(np.uint8))
    return acc.result()


def train(
    train_pairs: Sequence[tuple[str, str]],
    val_pairs: Sequence[tuple[str, str]],
    classes: list[str],
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    threads: int = 1,
) -> tuple[torch.nn.Module, pd.DataFrame, dict[str, Any]]:
    """Fit a model; returns the best one (validation mean IoU, or the last epoch without
    validation rasters), the per-epoch history and what the card records of the training."""
    torch.manual_seed(cfg["seed"])
    random.seed(cfg["seed"])
    np.random.seed(cfg["seed"])
    torch.set_num_threads(max(1, threads))
    tile, stride = cfg["tile"], cfg["tile"] - cfg["tile_overlap"]
    rare = cfg.get("rare_class")
    rare_idx = classes.index(rare) if rare else None
    bands = list(model_cfg["bands"])
    norm = band_statistics([p for p, _ in train_pairs], bands)
    tiles = tile_index(train_pairs, tile, stride, rare_idx)
    if not tiles:
        raise ValueError("no training tile holds a labelled pixel")
    weights = [cfg["oversample"] if t.rare else 1.0 for t in tiles]
    sampler = WeightedRandomSampler(
        weights,
        num_samples=len(tiles),
        replacement=True,
        generator=torch.Generator().manual_seed(cfg["seed"]),
    )
    loader = DataLoader(Tiles(tiles, tile, bands, norm, True), batch_size=cfg["batch_size"], sampler=sampler)
    val_tiles = tile_index(val_pairs, tile, tile, rare_idx) if val_pairs else []
    val_loader = (
        DataLoader(Tiles(val_tiles, tile, bands, norm, False), batch_size=cfg["batch_size"])
        if val_tiles
        else None
    )
    counts = pixel_counts(train_pairs, len(classes))
    loss_fn = Loss(cfg["loss"], _class_weights(cfg["class_weights"], counts))
    net = smp_model.build(model_cfg, len(bands), len(classes))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    rows, best, best_state = [], -1.0, None
    for epoch in range(1, cfg["epochs"] + 1):
        net.train()
        t0, total, n = time.time(), 0.0, 0
        for x, y in loader:
            opt.zero_grad()
            loss = loss_fn(net(x), y)
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * len(x), n + len(x)
        row = {"epoch": epoch, "train_loss": total / max(n, 1), "seconds": time.time() - t0, "tiles": n}
        if val_loader is not None:
            res = _evaluate(net, val_loader, classes, rare)
            row.update(val_mean_iou=res["mean_iou"], val_pixel_accuracy=res["pixel_accuracy"])
        rows.append(row)
        log.info("epoch %d: %s", epoch, row)
        score = row.get("val_mean_iou", epoch)
        if not np.isfinite(score):
            score = -0.5
        if score > best:
            best, best_state = score, {k: v.detach().clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    history = pd.DataFrame(rows)
    best_row = (
        history.loc[history["val_mean_iou"].idxmax()] if "val_mean_iou" in history else history.iloc[-1]
    )
    record = {
        "tiles": len(tiles),
        "rare_tiles": sum(t.rare for t in tiles),
        "pixels_per_class": dict(zip(classes, counts.tolist(), strict=True)),
        "rasters": {"train": len(train_pairs), "val": len(val_pairs)},
        "best_epoch": int(best_row["epoch"]),
        "epochs_run": len(history),
        "normalization": norm,
    }
    return net.eval(), history, record


def write_model(
    net: torch.nn.Module,
    record: dict[str, Any],
    classes: list[str],
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    weights: Path,
    card_path: Path,
) -> dict[str, Any]:
    """Write the weights (safetensors) and the model card (validated); returns the card."""
    with atomic_path(weights) as tmp:
        save_weights(net, tmp)
    card = {
        "id": sha256_file(weights),
        "format": "safetensors",
        "weights": Path(weights).name,
        "backend": "smp",
        "task": "semantic",
        "arch": model_cfg["arch"],
        "model": {
            k: model_cfg[k]
            for k in ("arch", "encoder", "encoder_depth", "decoder_channels")
            if k in model_cfg
        },
        "bands": list(model_cfg["bands"]),
        "classes": classes,
        "input_size": cfg["tile"],
        "normalization": record.pop("normalization"),
        "preprocessing": "selected bands, standardised per band (training rasters' statistics); nodata 0",
        "training": {**record, "config": cfg},
        "libraries": smp_model.library_versions(),
    }
    write_card(card, card_path)
    return card


def split_pairs(manifest: pd.DataFrame, split: str) -> list[tuple[str, str]]:
    rows = manifest[manifest["split"] == split]
    return list(zip(rows["image"].astype(str), rows["labels"].astype(str), strict=True))


def run(
    *,
    name: str,
    manifest_path: str | Path,
    settings: dict[str, Any],
    out: dict[str, str | Path],
    mlflow_cfg: dict[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """The train step of task semantic: fit on the manifest's train rasters (validation on its val
    rasters), write weights + card + history + curve, then the MLflow training run."""
    from aquaflow.monitoring import tracking
    from aquaflow.tasks.semantic import plots

    manifest = pd.read_parquet(manifest_path)
    classes, model_cfg, cfg = (
        settings["classes"],
        {**settings["model"], "bands": settings["bands"]},
        settings["train"],
    )
    started = time.time()
    net, history, record = train(
        split_pairs(manifest, "train"), split_pairs(manifest, "val"), classes, model_cfg, cfg, threads
    )
    seconds = time.time() - started
    card = write_model(net, record, classes, model_cfg, cfg, Path(out["weights"]), Path(out["card"]))
    write_tsv(history, out["history"])
    plots.training_curve(history, out["curve"])
    last = history.iloc[-1].to_dict()
    metrics = {"train_seconds": seconds, **{k: v for k, v in last.items() if k.startswith("val_")}}
    log.info("trained %s/%s in %.1f s: %s", model_cfg["arch"], model_cfg.get("encoder"), seconds, metrics)
    return tracking.log_training(
        usecase=name,
        card=card,
        card_path=out["card"],
        weights=out["weights"],
        params={"task": "semantic", **settings, "rasters": record["rasters"]},
        history=history,
        mlflow_cfg=mlflow_cfg,
        metrics=metrics,
        artifacts=[out["history"], out["curve"]],
        started=started,
        write_card=write_card,
    )
