"""Backend plug-ins: how a model loads, predicts a batch and trains (timm/ONNX, Keras, Ultralytics).

A backend's predictor has the same interface for every task: `Predictor.load(weights, card, device,
threads, runtime)` and `predictor(images)` on a uint8 NCHW batch. Which backend serves a model is
read from its card (`format`), never guessed from the file name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_predictor(
    weights: str | Path,
    card: str | Path | dict,
    device: str = "auto",
    threads: int = 1,
    runtime: str = "auto",
    safe_mode: bool = True,
) -> Any:
    """The predictor of the backend that made `card` (torch/timm unless the card says keras or
    ultralytics; an Ultralytics card of another task than classify is refused, naming it).

    `safe_mode` (Keras: refuse code inside the model file) comes from the use-case config or the
    command line, never from the card or its folder."""
    from aquaflow.io import read_json

    card = card if isinstance(card, dict) else read_json(card)
    if card.get("backend") == "keras" or card.get("format") == "keras":
        from aquaflow.backends.keras_model import KerasPredictor  # TensorFlow only when needed

        return KerasPredictor.load(weights, card, device, threads, safe_mode)
    if card.get("backend") == "ultralytics" or card.get("format") == "ultralytics":
        from aquaflow.backends.yolo.classify import Predictor as UltralyticsPredictor

        return UltralyticsPredictor.load(weights, card, device, threads, runtime)
    from aquaflow.backends.torch_model import Predictor

    return Predictor.load(weights, card, device, threads, runtime)


def load_instance_separator(folder: str | Path, threshold: float, threads: int = 1) -> Any:
    """The ZooScan Multiple Separator's instance model in a local folder: a `transformers`
    Mask2Former (`config.json`, as `save_pretrained` writes it) or an Ultralytics segment model
    folder as the engine imports it (`model_card.json`, task segment). Called on one vignette, it
    returns that vignette's instance masks scored >= threshold, best first."""
    from aquaflow.models.artifacts import CARD

    folder = Path(folder)
    if (folder / CARD).is_file():
        from aquaflow.backends.yolo.instances import InstanceSeparator as YoloSeparator

        return YoloSeparator(folder, threshold, threads)
    if (folder / "config.json").is_file():
        from aquaflow.backends.mask2former import InstanceSeparator

        return InstanceSeparator(folder, threshold, threads)
    raise FileNotFoundError(
        f"{folder}: neither a model folder (model_card.json, Ultralytics segment) nor a Mask2Former"
        " folder (config.json)"
    )


def train_classifier(
    backend: str,
    *,
    work: str | Path,
    pretrained_file: str | Path | None = None,
    log_stream: Any = None,
    **common: Any,
) -> dict[str, Any]:
    """Train a classifier with the trainer of `backend` (torch | keras | ultralytics) and return
    the card it wrote. `common`: name, settings, raw, manifest_path, classes_path, out (weights,
    card, history, curve), mlflow_cfg, threads. `work`: a scratch folder (Ultralytics' dataset
    view and settings). Keras resolves `model.pretrained` itself; Ultralytics reads the classes
    from its dataset view (sorted folder names, as prepare's classes.json)."""
    if backend == "keras":
        from aquaflow.backends import keras_train

        return keras_train.run(**common)
    if backend == "ultralytics":
        from aquaflow.backends.yolo import classify

        common.pop("classes_path")
        work = Path(work)
        return classify.run(
            **common, work=work / "train", ultralytics_dir=work / "settings", pretrained_file=pretrained_file
        )
    from aquaflow.backends import torch_train

    return torch_train.run(**common, pretrained_file=pretrained_file, log_stream=log_stream)
