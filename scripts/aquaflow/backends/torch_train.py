"""Training a classifier from a manifest: seeded, early-stopped on validation macro-F1, tracked."""

from __future__ import annotations

import copy
import logging
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, RandomSampler, WeightedRandomSampler
from tqdm import tqdm

from aquaflow import plots
from aquaflow.backends import distributed, pretrained
from aquaflow.backends import torch_model as models
from aquaflow.data import augment, balance, imaging, loader
from aquaflow.data.dataset import manifest_hash
from aquaflow.io import atomic_path, read_json, sha256_file, write_json, write_tsv
from aquaflow.models.artifacts import write_card
from aquaflow.tasks.classify.metrics import classification_metrics
from aquaflow.tasks.classify.runs import log_classifier_training

log = logging.getLogger(__name__)


class LabelledImages(Dataset):
    """Manifest rows as (uint8 CHW tensor of side `size`, class index), decoded or read from a
    decode-once `cache` (the same pixels: see aquaflow.data.loader)."""

    def __init__(
        self,
        root: Path,
        rows: pd.DataFrame,
        labels: list[int],
        size: int,
        transform=None,
        cache: loader.ImageCache | None = None,
    ):
        self.root, self.paths, self.ids = Path(root), rows["path"].tolist(), rows["id"].tolist()
        self.labels, self.size, self.transform, self.cache = labels, size, transform, cache

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self.cache is not None:
            x = self.cache[self.ids[i]]
        else:
            x = loader.chw(imaging.load(self.root / self.paths[i]).image, self.size)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


@dataclass
class TrainResult:
    best_epoch: int
    best_val_macro_f1: float
    epochs_run: int
    history: pd.DataFrame
    val_metrics: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, Any] | None = None  # provenance of the starting weights; None = random init


def _lr_lambda(cfg: dict[str, Any], steps_per_epoch: int):
    total = max(1, cfg["epochs"] * steps_per_epoch)
    warm = cfg["warmup_epochs"] * steps_per_epoch
    sched = cfg["scheduler"]

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        if sched == "cosine":
            t = (step - warm) / max(1, total - warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
        if sched == "step":  # x0.1 at 70 % and 90 % of training, as the VLIZ classifier does
            t = step / total
            return 1.0 if t < 0.7 else (0.1 if t < 0.9 else 0.01)
        return 1.0

    return f


def _set_stage(backbone: list[torch.nn.Parameter], frozen: bool) -> None:
    """Head-only (frozen backbone) or full fine-tuning."""
    for p in backbone:
        p.requires_grad_(not frozen)


def _make_optimizer(params, cfg: dict[str, Any]) -> torch.optim.Optimizer:
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(
            params, lr=cfg["lr"], momentum=0.9, nesterov=True, weight_decay=cfg["weight_decay"]
        )
    if cfg["optimizer"] == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    return torch.optim.AdamW(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


@torch.inference_mode()
def predict_loader(
    net: torch.nn.Module, loader: DataLoader, device: torch.device, amp: bool
) -> tuple[np.ndarray, np.ndarray, float]:
    """Softmax probabilities, labels and mean cross-entropy over a loader."""
    net.eval()
    probs, labels, loss_sum = [], [], 0.0
    for x, y in loader:
        x = x.to(device, non_blocking=True).to(memory_format=torch.channels_last)
        y = y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits, _ = net(x)
        logits = logits.float()
        loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
        probs.append(torch.softmax(logits, 1).cpu().numpy())
        labels.append(y.cpu().numpy())
    p, t = np.concatenate(probs), np.concatenate(labels)
    return p, t, loss_sum / max(1, len(t))


def train(
    manifest: pd.DataFrame,
    images_root: Path,
    classes: list[str],
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    threads: int = 1,
    log_stream=None,
    pretrained_file: str | Path | None = None,
    cache_path: str | Path | None = None,
) -> tuple[TrainResult, torch.nn.Module]:
    """Train; return the result and the backbone holding the best epoch's weights.

    Best = highest validation macro-F1. The history (one row per epoch) is what the MLflow run logs.
    `pretrained_file`: the fetched `model.pretrained` weights (fetch_pretrained rule); without it a
    package/path source is read where it lies. The first `freeze_epochs` train the head only.
    `cache_path`: a decode-once cache of the manifest's images at the input size (cache rule).
    Loader workers come from `threads` (aquaflow.data.loader.decode_workers) unless
    `num_workers` is set.
    """
    seed_everything(cfg["seed"])
    torch.set_num_threads(max(1, threads))
    device = models.pick_device(cfg["device"])
    world = distributed.start(device.type) if distributed.launched() else distributed.World()
    if device.type == "cuda" and world.size > 1:
        device = torch.device("cuda", world.local_rank)
    amp = device.type == "cuda" and cfg["amp"]
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    index = {c: i for i, c in enumerate(classes)}
    size = model_cfg["input_size"]

    cache = loader.ImageCache(cache_path, manifest, size) if cache_path else None

    def subset(split: str, transform=None) -> LabelledImages:
        part = manifest[manifest["split"] == split]
        labels = [index[lab] for lab in part["label"]]
        return LabelledImages(images_root, part, labels, size, transform, cache)

    train_ds = subset("train", augment.build(cfg["augmentation"], size))
    has_val = bool((manifest["split"] == "val").any())
    if not has_val:  # nothing to watch: no early stopping, the last epoch is kept
        log.warning(
            "no validation split: early stopping is off and the last epoch is kept; "
            "the val_* columns of the history are measured on the training set"
        )
    val_ds = subset("val") if has_val else subset("train")
    if len(train_ds) == 0:
        raise ValueError("the manifest has no training images")
    y_train = np.array(train_ds.labels)

    gen = torch.Generator().manual_seed(cfg["seed"])
    workers = loader.decode_workers(threads, device.type == "cuda", cfg.get("num_workers"))
    common = dict(
        num_workers=workers,
        worker_init_fn=_worker_init,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers else None,
    )
    log.info("loader: %d workers, pinned memory %s, cache %s", workers, device.type == "cuda", cache_path)
    train_loader = _train_loader(train_ds, y_train, len(classes), cfg, gen, world, common)
    val_loader = DataLoader(val_ds, batch_size=cfg["batch_size"] * 2, shuffle=False, **common)

    spec = model_cfg.get("pretrained")
    start = pretrained.resolve(spec, pretrained_file)
    base = models.build(model_cfg["arch"], len(classes))
    load_report = models.load_backbone(base, start, spec.get("keys", "auto")) if start else None
    if world.size > 1 and device.type == "cuda":  # batch statistics over the global batch
        base = torch.nn.SyncBatchNorm.convert_sync_batchnorm(base)
    net = models.Normalized(base, model_cfg["mean"], model_cfg["std"]).to(device)
    net = net.to(memory_format=torch.channels_last)
    forward = net
    if world.size > 1:  # frozen (head-only) epochs leave the backbone without gradients
        ids = [world.local_rank] if device.type == "cuda" else None
        forward = DistributedDataParallel(
            net, device_ids=ids, find_unused_parameters=cfg["freeze_epochs"] > 0
        )
    loss_weight = None
    w = balance.class_weights(y_train, len(classes), "balanced") if cfg["balancing"] == "weights" else None
    w = balance.apply_overrides(w, classes, cfg.get("class_weights") or {})
    if w is not None:
        loss_weight = torch.tensor(w, dtype=torch.float32, device=device)
    reduction = "sum" if world.size > 1 else "mean"  # ranks divide by the global batch's weight
    criterion = torch.nn.CrossEntropyLoss(
        weight=loss_weight, label_smoothing=cfg["label_smoothing"], reduction=reduction
    )
    head = list(base.get_classifier().parameters())
    head_ids = {id(p) for p in head}
    backbone = [p for p in base.parameters() if id(p) not in head_ids]
    groups = [{"params": backbone, "lr": cfg["lr"] * cfg["backbone_lr_scale"]}, {"params": head}]
    optimizer = _make_optimizer(groups, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, len(train_loader)))

    history, best_state = [], None
    best_f1, best_epoch, stale = -1.0, 0, 0
    es = cfg["early_stopping"]
    epochs = tqdm(range(1, cfg["epochs"] + 1), desc="epochs", file=log_stream, mininterval=10.0)
    for epoch in epochs:
        t0 = time.perf_counter()
        frozen = epoch <= cfg["freeze_epochs"]
        _set_stage(backbone, frozen)
        net.train()
        if frozen:  # BatchNorm statistics of the backbone stay as pretrained
            for m in base.modules():
                if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                    m.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in train_loader:
            x = x.to(device, non_blocking=True).to(memory_format=torch.channels_last)
            y = y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits, _ = forward(x)
                loss = criterion(logits.float(), y)
            hits = (logits.argmax(1) == y).sum().item()
            if world.size > 1:
                loss, step = _global_mean(loss, y, loss_weight, hits, world)
            else:
                step = (loss.item() * len(y), hits, len(y))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sched.step()
            loss_sum, correct, seen = loss_sum + step[0], correct + step[1], seen + step[2]
        probs, yv, val_loss = predict_loader(net, val_loader, device, amp)
        val_pred = probs.argmax(1)
        val_f1 = f1_score(yv, val_pred, average="macro", labels=range(len(classes)), zero_division=0)
        row = {
            "epoch": epoch,
            "train_loss": loss_sum / seen,
            "train_acc": correct / seen,
            "val_loss": val_loss,
            "val_acc": float((val_pred == yv).mean()),
            "val_macro_f1": float(val_f1),
            "lr": optimizer.param_groups[1]["lr"],
            "frozen": int(frozen),
            "seconds": time.perf_counter() - t0,
        }
        history.append(row)
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        if val_f1 > best_f1 + es["min_delta"] or not has_val:
            best_f1, best_epoch, stale = float(val_f1), epoch, 0
            best_state = copy.deepcopy(base.state_dict())
        else:
            stale += 1
            if es["patience"] and stale >= es["patience"] and has_val:
                log.info("early stopping at epoch %d (best %d, macro-F1 %.4f)", epoch, best_epoch, best_f1)
                break
    epochs.close()

    base.load_state_dict(best_state)
    hist = pd.DataFrame(history)
    probs, yv, _ = predict_loader(net, val_loader, device, amp)
    val_metrics = classification_metrics(yv, probs, classes)
    record = pretrained.provenance(spec, start, load_report)
    distributed.stop()
    return TrainResult(best_epoch, best_f1, len(history), hist, val_metrics, record), base


def _train_loader(
    ds: LabelledImages,
    y_train: np.ndarray,
    n_classes: int,
    cfg: dict[str, Any],
    gen: torch.Generator,
    world: distributed.World,
    common: dict[str, Any],
) -> DataLoader:
    """Shuffled (or class-balanced: `resample`) batches of `batch_size`, seeded by `gen`; with
    several ranks each takes its share of the same global batches."""
    sampler = None
    if cfg["balancing"] == "resample":
        weights = balance.sample_weights(y_train, n_classes)
        sampler = WeightedRandomSampler(
            torch.as_tensor(weights, dtype=torch.double),
            num_samples=len(y_train),
            replacement=True,
            generator=gen,
        )
    if world.size > 1:
        if cfg["batch_size"] < world.size:
            raise ValueError(
                f"training.batch_size {cfg['batch_size']} is smaller than the {world.size} processes"
            )
        order = sampler or RandomSampler(ds, generator=gen)
        shares = distributed.GlobalBatchShard(order, cfg["batch_size"], world)
        return DataLoader(ds, batch_sampler=shares, generator=gen, **common)
    return DataLoader(
        ds,
        batch_size=cfg["batch_size"],
        shuffle=sampler is None,
        sampler=sampler,
        generator=gen,
        drop_last=False,
        **common,
    )


def _global_mean(
    loss_sum: torch.Tensor,
    y: torch.Tensor,
    weight: torch.Tensor | None,
    hits: int,
    world: distributed.World,
) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """This rank's summed loss scaled so that DDP's gradient average is the gradient of the global
    batch's (class-weighted) mean loss; with the step's global (loss sum, hits, items)."""
    denom = weight[y].sum().item() if weight is not None else float(len(y))
    total = distributed.reduce_sum([loss_sum.item(), denom, hits, len(y)])
    loss = loss_sum * (world.size / total[1].item())
    mean = total[0].item() / total[1].item()
    return loss, (mean * total[3].item(), total[2].item(), total[3].item())


def write_outputs(
    base: torch.nn.Module,
    result: TrainResult,
    manifest: pd.DataFrame,
    classes: list[str],
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    weights_path: Path,
    card_path: Path,
    history_path: Path,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Write weights (safetensors), the history table and the model card; return the card."""
    with atomic_path(weights_path) as tmp:
        models.save_weights(base, tmp)
    write_tsv(result.history, history_path)
    counts = manifest.groupby(["split", "label"]).size()
    card = {
        "id": sha256_file(weights_path),
        "format": "safetensors",
        "weights": Path(weights_path).name,
        "backend": "torch",
        "task": "classify",
        "arch": model_cfg["arch"],
        "classes": classes,
        "input_size": model_cfg["input_size"],
        "preprocessing": "RGB uint8, letterbox to square (median border colour), resize",
        "normalization": {"mean": list(model_cfg["mean"]), "std": list(model_cfg["std"])},
        "pretrained": result.pretrained,
        "training": {
            "manifest_sha256": manifest_hash(manifest),
            "images": {s: int(counts[s].sum()) for s in counts.index.get_level_values(0).unique()},
            "config": train_cfg,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
        },
        "metrics": {
            "val_macro_f1": result.best_val_macro_f1,
            "val_accuracy": result.val_metrics["accuracy"],
        },
        "libraries": models.library_versions(),
        **extra,
    }
    write_card(card, card_path)
    return card


def run(
    *,
    name: str,
    settings: dict[str, Any],
    raw: str | Path,
    manifest_path: str | Path,
    classes_path: str | Path,
    out: dict[str, str | Path],
    pretrained_file: str | Path | None = None,
    cache_path: str | Path | None = None,
    mlflow_cfg: dict[str, Any],
    threads: int = 1,
    log_stream=None,
    processes: int = 1,
    log_path: str | Path | None = None,
    launcher: str | None = None,
) -> dict[str, Any]:
    """The train step: fit, write weights + card + history + curve, then the MLflow training run
    (tracking.log_training: params, per-epoch history, card, model folder, registry version).

    `settings`: {images (folder of the dataset), model, training, data (source identity)}.
    `out`: weights, card, history, curve paths. `cache_path`: see `train`. With
    `training.distributed`, `processes` ranks started by torchrun (or, with `launcher` = the train
    job's `mpi` resource such as `srun`, the Slurm job's tasks) train together (DDP; they log to
    `log_path`) and rank 0 writes every output and the MLflow run; the card is returned.
    """
    if settings["training"].get("distributed") and not distributed.launched():
        args = {k: str(v) if isinstance(v, Path) else v for k, v in locals().items() if k != "log_stream"}
        args["out"] = {k: str(v) for k, v in out.items()}
        args["launcher"] = None
        ranks, args["threads"] = distributed.ranks_and_threads(processes, threads, launcher)
        log.info("training.distributed: %d ranks started by %s", ranks, launcher or "torchrun")
        # beside the outputs: the ranks of a multi-node Slurm job read it from the shared disk
        with tempfile.TemporaryDirectory(prefix=".ddp-", dir=Path(out["card"]).parent) as tmp:
            write_json(args, Path(tmp) / "run.json")
            distributed.launch(Path(tmp) / "run.json", processes, threads, launcher)
        return read_json(out["card"])
    manifest = pd.read_parquet(manifest_path)
    classes = read_json(classes_path)["classes"]
    images_root = Path(raw) / settings["images"]
    model_cfg, train_cfg = settings["model"], settings["training"]
    started = time.time()
    result, best = train(
        manifest,
        images_root,
        classes,
        model_cfg,
        train_cfg,
        threads,
        log_stream,
        pretrained_file,
        cache_path,
    )
    if not distributed.is_main():  # rank 0 writes the outputs and the MLflow run
        return {}
    card = write_outputs(
        best,
        result,
        manifest,
        classes,
        model_cfg,
        train_cfg,
        Path(out["weights"]),
        Path(out["card"]),
        Path(out["history"]),
        {"data": {"source": settings["data"]}},
    )
    plots.training_curve(result.history, out["curve"])
    return log_classifier_training(
        usecase=name,
        card=card,
        out=out,
        settings=settings,
        images=len(manifest),
        history=result.history,
        val_metrics=result.val_metrics,
        best={"best_val_macro_f1": result.best_val_macro_f1, "best_epoch": result.best_epoch},
        mlflow_cfg=mlflow_cfg,
        started=started,
    )


def main(argv: list[str] | None = None) -> None:
    """One rank of a distributed train step: `python -m aquaflow.backends.torch_train RUN_JSON`
    (started by torchrun from `run`; RUN_JSON holds run()'s arguments)."""
    import sys

    from aquaflow import runlog

    distributed.world_from_slurm()
    args = read_json((argv or sys.argv[1:])[0])
    if args.get("log_path"):
        level = logging.INFO if distributed.is_main() else logging.WARNING
        args["log_stream"] = runlog.setup(args["log_path"], level)
    run(**args)


if __name__ == "__main__":
    main()
