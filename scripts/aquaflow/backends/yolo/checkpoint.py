"""Ultralytics checkpoints of every task (classify, detect, segment, obb): the facts inside, the model
card made from them, and given checkpoints imported with their task checked against the use case's.

A checkpoint knows its task, class names (in index order) and training image size; these, never
the file name or a default, go into the card. A `.pt` is a pickle: it is loaded with
`ULTRALYTICS_SAFE_LOAD` (see `aquaflow.backends.yolo.ultra`), after `offline()` has set Ultralytics up.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from aquaflow.backends.yolo import ultra
from aquaflow.io import sha256_file
from aquaflow.models import artifacts
from aquaflow.models.artifacts import ModelCardError

TASKS = ("classify", "detect", "segment", "obb")
# classify_transforms' defaults: RGB / 255 with no further shift or scale
IDENTITY = {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}
LOADING = (
    "Ultralytics .pt is a pickle: loaded with ULTRALYTICS_SAFE_LOAD (weights_only allow-list);"
    " load only weights this workflow produced or that you trust"
)


def offline(settings_dir: str | Path | None = None) -> None:
    """Set Ultralytics up offline once per process (`ultra.setup`): its settings in `settings_dir`,
    or in a temporary folder removed at exit (prediction jobs keep nothing of it)."""
    if "ultralytics" in sys.modules and os.environ.get("YOLO_OFFLINE") == "1":
        return
    if settings_dir is None:
        settings_dir = tempfile.mkdtemp(prefix="aquaflow-ultralytics-")
        atexit.register(shutil.rmtree, settings_dir, True)
    ultra.setup(settings_dir)


def load(weights: str | Path, device: Any = None, fuse: bool = False) -> tuple[Any, dict[str, Any]]:
    """(model in eval mode, checkpoint dict) as Ultralytics loads them (FP32, args from training)."""
    offline()
    from ultralytics.nn.tasks import load_checkpoint

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"{weights}: model weights not found")
    return load_checkpoint(str(path), device=device, fuse=fuse)


def check_task(weights: str | Path, found: str, expected: str, whose: str = "the use case's task") -> None:
    """Stop when the checkpoint's task is not the one asked for, naming both."""
    if found != expected:
        raise ModelCardError(f"{weights} is an Ultralytics '{found}' model but {whose} is '{expected}'")


def classify_normalization(model: Any, imgsz: int, origin: str) -> dict[str, list[float]]:
    """Mean and std of the preprocessing Ultralytics' classify predictor applies at `imgsz`: the
    checkpoint's own transforms when their size is imgsz (Resize + CenterCrop + ToTensor +
    Normalize, bilinear), else classify_transforms' defaults. Anything else is refused, naming it."""
    import torch
    import torchvision.transforms as T

    transforms = getattr(model, "transforms", None)
    steps = list(getattr(transforms, "transforms", ()))
    if transforms is None:
        return dict(IDENTITY)
    size = getattr(steps[0], "size", imgsz) if steps else None
    size = (size, size) if isinstance(size, int) else size
    if size is None or tuple(size) != (imgsz, imgsz):
        return dict(IDENTITY)  # Ultralytics then uses classify_transforms(imgsz)
    kinds = tuple(type(s) for s in steps)
    resize = steps[0]
    if (
        kinds != (T.Resize, T.CenterCrop, T.ToTensor, T.Normalize)
        or resize.interpolation != T.InterpolationMode.BILINEAR
        or resize.max_size is not None
        or not (isinstance(resize.size, int) or len(resize.size) == 1)
    ):
        raise ModelCardError(
            f"{origin}: its classification preprocessing {transforms} is not one aquaflow reproduces"
        )
    norm = steps[3]
    return {
        "mean": [float(v) for v in torch.as_tensor(norm.mean).flatten()],
        "std": [float(v) for v in torch.as_tensor(norm.std).flatten()],
    }


def facts(model: Any, weights: str | Path) -> dict[str, Any]:
    """What the checkpoint says about itself: task, classes in index order, image size, architecture."""
    task = getattr(model, "task", None)
    if task not in TASKS:
        raise ModelCardError(f"{weights}: Ultralytics task {task!r} is not one of {TASKS}")
    names = model.names
    classes = [str(names[i]) for i in sorted(names)] if isinstance(names, dict) else [str(n) for n in names]
    imgsz = model.args.get("imgsz", 640)
    if isinstance(imgsz, (list, tuple)):
        if len(set(imgsz)) != 1:
            raise ModelCardError(f"{weights}: image size {imgsz} is not square")
        imgsz = imgsz[0]
    yaml = getattr(model, "yaml", None) or {}
    channels = yaml.get("channels", 3)
    if channels != 3:
        raise ModelCardError(f"{weights}: the model takes {channels} channels; aquaflow feeds RGB (3)")
    return {
        "task": task,
        "classes": classes,
        "input_size": int(imgsz),
        "arch": Path(yaml.get("yaml_file") or "").name or type(model).__name__,
    }


def make_card(model: Any, ckpt: dict[str, Any], weights: str | Path) -> dict[str, Any]:
    """The model card of a checkpoint (same keys as every backend's, see artifacts.validate_card)."""
    f = facts(model, weights)
    card: dict[str, Any] = {
        "id": sha256_file(weights),
        "format": "ultralytics",
        "weights": Path(weights).name,
        "backend": "ultralytics",
        **f,
    }
    if f["task"] == "classify":
        card["resize"] = "center_crop"
        card["preprocessing"] = (
            "RGB uint8, shorter side to input_size (Pillow bilinear), centre crop input_size x input_size"
            " (Ultralytics' classify transforms)"
        )
        card["normalization"] = {
            **classify_normalization(model, f["input_size"], str(weights)),
            "preprocess": "RGB / 255, then (x - mean) / std",
        }
    else:
        card["normalization"] = {"preprocess": "Ultralytics letterbox to input_size, RGB / 255"}
    card["ultralytics"] = {k: ckpt.get(k) for k in ("version", "date") if ckpt.get(k)}
    card["loading"] = LOADING
    return card


def import_model(
    spec: dict[str, Any],
    task: str,
    weights_out: str | Path,
    card_out: str | Path,
    mlflow_cfg: dict[str, Any] | None = None,
    settings_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Bring a given Ultralytics checkpoint into the workflow as model.pt + model_card.json.

    `spec`: model.source / path / package / subdir / uri / sha256. The source is a folder (or card)
    with model_card.json and the `.pt` it names, or a bare `.pt` (its card is made from it). The
    checkpoint's task must be the use case's `task`; a card given with it must agree with it.
    """
    offline(settings_dir)

    def describe(weights: Path, card: dict[str, Any] | None) -> dict[str, Any]:
        model, ckpt = load(weights)
        check_task(weights, getattr(model, "task", None), task)
        made = make_card(model, ckpt, weights)
        if card is None:
            return made
        fixed = ["task", "classes", "format", "backend"]
        if task == "classify":  # what inference reproduces Ultralytics' predictions with
            fixed += ["input_size", "resize", "normalization"]
        for key in ("task", "classes", "input_size"):
            if key in fixed and key in card and card[key] != made[key]:
                raise ModelCardError(
                    f"{weights}: its model card says {key} {card[key]!r} but the checkpoint {made[key]!r}"
                )
        return {**made, **card, **{k: made[k] for k in fixed}}

    return artifacts.import_model(spec, weights_out, card_out, mlflow_cfg, describe)
