"""Ultralytics classification (YOLOv8/11-cls `.pt`) as a backend: predictor and trainer.

`Predictor` has the interface of `aquaflow.backends.torch_model.Predictor`: the engine decodes and
resizes (card `resize: center_crop` = Ultralytics' classify transforms, `aquaflow.data.imaging`), the
predictor scales to 0..1, normalises as the checkpoint's transforms say and runs the fused FP32
model as Ultralytics' own predictor does, so labels and probabilities are Ultralytics'.

`run` trains with Ultralytics' own classification trainer on the prepared manifest (ImageFolder
layout of links), from a model yaml (never a download), offline.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from aquaflow.backends.torch_model import pick_device
from aquaflow.backends.yolo import checkpoint, ultra
from aquaflow.data.dataset import manifest_hash
from aquaflow.io import read_json
from aquaflow.models.artifacts import ModelCardError, write_card
from aquaflow.monitoring import tracking

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "eager")  # inference.backend values an Ultralytics model runs with
PREDICT_TASK = "the task of classification shards and `aquaflow predict`"


@dataclass
class Predictor:
    """A loaded Ultralytics classifier: uint8 RGB NCHW batch -> (probs, features) as numpy.

    Features are the input of the head's last linear layer (the pooled 1280-d embedding)."""

    net: torch.nn.Module
    card: dict[str, Any]
    device: torch.device
    mean: torch.Tensor
    std: torch.Tensor
    backend: str = "ultralytics"
    _features: list[torch.Tensor] = field(default_factory=list, repr=False)

    @classmethod
    def load(
        cls,
        weights: str | Path,
        card: str | Path | dict,
        device: str = "auto",
        threads: int = 1,
        runtime: str = "auto",
    ) -> Predictor:
        if runtime not in RUNTIMES:
            raise ValueError(
                f"inference.backend {runtime!r} is for timm models; an Ultralytics model runs with {RUNTIMES}"
            )
        card = dict(card) if isinstance(card, dict) else read_json(card)
        name = Path(weights).name
        checkpoint.check_task(name, card.get("task", "classify"), "classify", PREDICT_TASK)
        torch.set_num_threads(max(1, threads))
        dev = pick_device(device)
        net, _ = checkpoint.load(weights, dev, fuse=True)  # fused, as Ultralytics' predictor runs it
        facts = checkpoint.facts(net, weights)
        checkpoint.check_task(name, facts["task"], "classify", PREDICT_TASK)
        for key in ("classes", "input_size"):
            if card.get(key) != facts[key]:
                raise ModelCardError(
                    f"{weights}: its model card says {key} {card.get(key)!r}, the checkpoint {facts[key]!r}"
                )
        norm = card["normalization"]
        pred = cls(
            net,
            card,
            dev,
            torch.tensor(norm["mean"], dtype=torch.float32, device=dev).view(1, 3, 1, 1),
            torch.tensor(norm["std"], dtype=torch.float32, device=dev).view(1, 3, 1, 1),
        )
        net.model[-1].linear.register_forward_pre_hook(lambda _m, args: pred._features.append(args[0]))
        return pred

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = images.to(self.device).float().div_(255)  # as Ultralytics: uint8 -> float, / 255
        x = (x - self.mean) / self.std
        self._features.clear()
        out = self.net(x)
        probs = out[0] if isinstance(out, (list, tuple)) else out  # eval: (softmax, logits)
        feats = self._features.pop()
        return probs.float().cpu().numpy(), feats.float().cpu().numpy()


# --- training -----------------------------------------------------------------------------------

LOCAL_ARGS = ("data", "project", "name", "exist_ok", "verbose")  # paths of this run, not settings
OPTIMIZERS = {"adamw": "AdamW", "adam": "Adam", "sgd": "SGD"}
# training.augmentation items -> Ultralytics classify_augmentations arguments (on, off)
AUGMENTATION = {
    "hflip": ("fliplr", 0.5, 0.0),
    "vflip": ("flipud", 0.5, 0.0),
    "scale_crop": ("scale", 0.5, 0.0),
    "brightness_contrast": ("hsv_v", 0.4, 0.0),
}


def image_folders(manifest: pd.DataFrame, images_root: Path, out: Path) -> dict[str, int]:
    """Ultralytics' ImageFolder layout `<out>/{train,val}/<label>/<id><ext>` of links to the
    manifest's images (copies where links cannot be made); returns images per split."""
    shutil.rmtree(out, ignore_errors=True)
    part = manifest[manifest["split"].isin(["train", "val"])]
    for split in ("train", "val"):
        if not (part["split"] == split).any():
            raise ValueError(f"the manifest has no '{split}' images; Ultralytics trains on train and val")
    for label in part["label"].unique():
        if "/" in label or label in (".", ".."):
            raise ValueError(f"label {label!r} cannot be a folder name (Ultralytics' class folders)")
    for row in part.itertuples(index=False):
        dst = out / row.split / row.label / f"{row.id}{Path(row.path).suffix.lower()}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        src = (images_root / row.path).resolve()
        try:
            os.symlink(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return {s: int(n) for s, n in part["split"].value_counts().items()}


def train_args(
    model_cfg: dict[str, Any], train_cfg: dict[str, Any], data: Path, work: Path, pretrained: bool
) -> tuple[dict[str, Any], list[str]]:
    """Ultralytics train() arguments from `model` + `training`, and the settings it cannot apply."""
    t = train_cfg
    if t["scheduler"] == "step":
        raise ValueError("training.scheduler 'step' is not available with model.backend ultralytics")
    dev = ultra.device_arg(t["device"])
    aug = set(t["augmentation"])
    args = {
        "data": str(Path(data).resolve()),
        "epochs": t["epochs"],
        "imgsz": model_cfg["input_size"],
        "batch": t["batch_size"],
        "nbs": t["batch_size"],  # one optimizer step per batch, weight decay as given
        "device": dev,
        "amp": bool(t["amp"]) and dev != "cpu",  # the AMP check downloads a model: never on a CPU
        "pretrained": pretrained,
        "optimizer": OPTIMIZERS[t["optimizer"]],
        "lr0": t["lr"],
        "lrf": 0.01 if t["scheduler"] == "cosine" else 1.0,
        "cos_lr": t["scheduler"] == "cosine",
        "weight_decay": t["weight_decay"],
        "warmup_epochs": t["warmup_epochs"],
        "patience": t["early_stopping"]["patience"] or t["epochs"] + 1,
        "seed": t["seed"],
        "deterministic": True,
        "workers": t.get("num_workers") or 0,  # null: no worker processes, as before
        "hsv_h": 0.0,
        "hsv_s": 0.0,
        "auto_augment": None,
        "erasing": 0.0,
        **{key: (on if item in aug else off) for item, (key, on, off) in AUGMENTATION.items()},
        "plots": False,
        "project": str(Path(work).resolve()),  # a relative one would land under runs_dir
        "name": "run",
        "exist_ok": True,
        "verbose": False,
    }
    unused = [f"augmentation {a}" for a in sorted(aug - set(AUGMENTATION))]
    if t["balancing"] != "none" or t["class_weights"]:
        unused.append("balancing / class_weights")
    for key, off in (("label_smoothing", 0), ("freeze_epochs", 0), ("backbone_lr_scale", 1.0)):
        if t[key] != off:
            unused.append(key)
    unused += [key for key in ("cache", "distributed") if t.get(key)]  # the torch trainer's
    return args, unused


def build(arch: str, pretrained_file: str | Path | None = None):
    """A classification model from an Ultralytics yaml (e.g. yolo11n-cls.yaml), never a download;
    `pretrained_file`: a local Ultralytics checkpoint whose matching layers are loaded."""
    from ultralytics import YOLO

    if not arch.endswith(".yaml"):
        raise ValueError(
            f"model.arch {arch!r}: with model.backend ultralytics, an Ultralytics classification model "
            "yaml such as yolo11n-cls.yaml (models are built, never downloaded)"
        )
    model = YOLO(arch, task="classify")
    if model.task != "classify":
        raise ValueError(f"model.arch {arch!r} builds an Ultralytics '{model.task}' model, not 'classify'")
    if pretrained_file:
        checkpoint.check_task(pretrained_file, checkpoint.load(pretrained_file)[0].task, "classify")
        model.load(str(pretrained_file))
    return model


def run(
    *,
    name: str,
    settings: dict[str, Any],
    raw: str | Path,
    manifest_path: str | Path,
    out: dict[str, str | Path],
    work: str | Path,
    ultralytics_dir: str | Path,
    mlflow_cfg: dict[str, Any],
    pretrained_file: str | Path | None = None,
    threads: int = 1,
) -> dict[str, Any]:
    """The train step: Ultralytics' trainer on the prepared manifest; writes model.pt (the best
    checkpoint), model_card.json (classes, image size and preprocessing from it), history, curve,
    and the MLflow training run with its registry version (tracking.log_training).

    `settings`: {images (folder of the dataset), model, training, data (source identity)}."""
    from aquaflow.backends.yolo.train import fit, library_versions

    ultra.setup(ultralytics_dir)
    work = Path(work)
    shutil.rmtree(work / "run", ignore_errors=True)
    manifest = pd.read_parquet(manifest_path)
    images = image_folders(manifest, Path(raw) / settings["images"], work / "data")
    model_cfg, train_cfg = settings["model"], settings["training"]
    model = build(model_cfg["arch"], pretrained_file)
    args, unused = train_args(model_cfg, train_cfg, work / "data", work, bool(pretrained_file))
    if unused:
        log.warning("not in Ultralytics' classification trainer, not applied: %s", ", ".join(unused))
    torch.set_num_threads(max(1, threads))
    started, seconds, hist = fit(model, args, out)
    net, ckpt = checkpoint.load(out["weights"])
    card = checkpoint.make_card(net, ckpt, out["weights"])
    top1 = hist["metrics/accuracy_top1"] if "metrics/accuracy_top1" in hist else pd.Series(dtype=float)
    card.update(
        {
            "usecase": name,
            "pretrained": {"file": Path(pretrained_file).name} if pretrained_file else None,
            "training": {
                "manifest_sha256": manifest_hash(manifest),
                "images": images,
                "config": train_cfg,
                "ultralytics_args": {k: v for k, v in args.items() if k not in LOCAL_ARGS},
                "not_applied": unused,
                "epochs_run": len(hist),
                "best_epoch": int(hist["epoch"][top1.idxmax()]) if top1.notna().any() else None,
                "seconds": round(seconds, 1),
            },
            "metrics": {"val_accuracy": float(top1.max())} if top1.notna().any() else {},
            "data": {"source": settings["data"]},
            "libraries": library_versions(),
        }
    )
    log.info("trained %s in %.1f s (%d epochs): %s", model_cfg["arch"], seconds, len(hist), card["id"][:16])
    params = {"model": model_cfg, "training": train_cfg, "classes": len(card["classes"]), "images": images}
    return tracking.log_training(
        usecase=name,
        card=card,
        card_path=out["card"],
        weights=out["weights"],
        params=params,
        history=hist,
        mlflow_cfg=mlflow_cfg,
        metrics={"train_seconds": seconds, **card["metrics"]},
        artifacts=[out["history"], out["curve"]],
        started=started,
        write_card=write_card,
    )
