"""Ultralytics, offline: settings inside the results folder, no downloads, safe checkpoint loading.

Call `setup(settings_dir)` before anything imports `ultralytics` (it reads its environment at import
time): it
- sets `YOLO_OFFLINE=1` (no DNS probe at import, no update or telemetry calls),
  `YOLO_AUTOINSTALL=false` (never pip-installs a missing package) and `YOLO_CONFIG_DIR` to a folder
  of the results, so nothing is written to the home directory;
- puts a local font (matplotlib's DejaVu Sans) where Ultralytics looks for Arial, because its
  dataset check otherwise downloads Arial.ttf;
- turns every logging integration (MLflow, Comet, ClearML, DVC, W&B, Ray Tune, TensorBoard) and
  event sync off and points datasets/weights/runs folders into the results folder;
- sets `ULTRALYTICS_SAFE_LOAD=1`: checkpoints load with `torch.load(weights_only=True)` against an
  allow-list of Ultralytics/torch classes (no arbitrary pickle code);
- undoes Ultralytics' patch of `PIL.Image.open` (it would try to pip-install pi-heif on any file
  Pillow cannot identify), so decoding and rejection reasons stay those of `aquaflow.data.imaging`.

Ultralytics `.pt` files are pickles even so: load only weights this workflow produced or that the
user points at explicitly. Models are built from a yaml (`yolo11n.yaml` style) or a local weights
path, never from a bare name that Ultralytics would download; training uses `pretrained=False`
unless weights are given and `amp=False` on a CPU (the AMP check downloads a model on a GPU, so it
is off there too: `amp` is only on when the config says so and a GPU is used).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

TASK_SUFFIX = {"detect": "", "segment": "-seg", "obb": "-obb"}
ENV = {"YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "false", "ULTRALYTICS_SAFE_LOAD": "1", "YOLO_VERBOSE": "true"}


class ModelSourceError(ValueError):
    """A detection model source that would need a download or does not exist."""


def setup(settings_dir: str | Path) -> Path:
    """Make Ultralytics offline with its settings under `settings_dir`; returns its config folder."""
    settings_dir = Path(settings_dir).resolve()
    cfg = settings_dir / "Ultralytics"
    cfg.mkdir(parents=True, exist_ok=True)
    if "ultralytics" in sys.modules and os.environ.get("YOLO_OFFLINE") != "1":
        raise RuntimeError(
            "ultralytics was imported before aquaflow.backends.yolo.ultra.setup(); call setup first"
        )
    if "ultralytics" not in sys.modules:  # a second setup in one process keeps the first folder
        os.environ.update(ENV)
        os.environ["YOLO_CONFIG_DIR"] = str(settings_dir)
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    _undo_pil_patch()
    _fonts(cfg)
    _fonts(Path(USER_CONFIG_DIR))

    SETTINGS.update(
        {
            "sync": False,
            "datasets_dir": str(settings_dir / "datasets"),
            "weights_dir": str(settings_dir / "weights"),
            "runs_dir": str(settings_dir / "runs"),
            **{k: False for k in ("clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")},
            "vscode_msg": False,
            "openvino_msg": False,
        }
    )
    return cfg


def _undo_pil_patch() -> None:
    """Ultralytics replaces PIL.Image.open with a wrapper that, on an unidentified file, tries to
    pip-install and import pi-heif; that turns our `not_an_image` rejections into import errors.
    Put Pillow's own function back: our engine decodes, Ultralytics gets arrays."""
    from PIL import Image
    from ultralytics.utils import patches

    original = getattr(patches, "_image_open", None)
    if original is not None and Image.open is not original:
        Image.open = original


def _fonts(folder: Path) -> None:
    """matplotlib's DejaVu Sans stands in for the Arial that Ultralytics would download."""
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        if not (folder / name).exists():
            shutil.copyfile(font, folder / name)


def model_yaml(size: str, task: str, family: str = "yolo11") -> str:
    """The Ultralytics model yaml of a size/task, e.g. ('n', 'segment') -> 'yolo11n-seg.yaml'."""
    if task not in TASK_SUFFIX:
        raise ValueError(f"task {task!r} is not one of {sorted(TASK_SUFFIX)}")
    return f"{family}{size}{TASK_SUFFIX[task]}.yaml"


def build(spec: dict[str, Any], task: str):
    """A YOLO model: from a local weights file (`weights`) or built from the yaml of `family`+`size`.

    A weights path must exist: a bare name such as `yolo11n.pt` is refused, since Ultralytics would
    download it.
    """
    from ultralytics import YOLO

    weights = spec.get("weights")
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ModelSourceError(
                f"detection.model.weights: {weights} is not a file on disk (weights are never downloaded)"
            )
        return YOLO(str(path), task=task)
    return YOLO(model_yaml(spec["size"], task, spec["family"]), task=task)


def load(weights: str | Path, task: str):
    """Load weights this workflow trained (or the user gave) for prediction; safe loading is on."""
    from ultralytics import YOLO

    path = Path(weights)
    if not path.is_file():
        raise ModelSourceError(f"{weights}: model weights not found")
    return YOLO(str(path), task=task)


def device_arg(device: str) -> str:
    """Config device (auto|cpu|cuda[:i]) -> Ultralytics device string."""
    import torch

    if device == "auto":
        return "0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        return device.split(":", 1)[1] if ":" in device else "0"
    return "cpu"
