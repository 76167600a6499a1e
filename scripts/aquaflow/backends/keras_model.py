"""Keras/TensorFlow classifiers: safe loading, model cards, preprocessing and the shard-engine predictor.

A Keras model runs exactly as published: its class list, input size, resize and preprocessing come
from its own configuration (a `model_card.json`, or a `planktonclas` model folder's
`conf/conf.json` + `dataset_files/classes.txt`), never from defaults. Loading is safe by default:
a model holding a `Lambda` layer (Python code inside the file) is refused unless the use case sets
`model.safe_mode: false` (or `aquaflow predict --no-safe-mode`). That setting comes only from the
caller, never from a model folder or its card: a shared folder cannot switch its own safety off.

TensorFlow is an optional extra (`pip install .[keras]`); it is imported only when a Keras model is
used, so the torch backend never pays for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aquaflow.io import atomic_path, read_json, sha256_file
from aquaflow.models import artifacts

log = logging.getLogger(__name__)

CARD = "model_card.json"
WEIGHTS = "model.keras"
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
# how the uint8 RGB image becomes the model's input (card key normalization.preprocess)
PREPROCESS = ("none", "scale", "mean_std", "planktonclas", "keras_applications")
PLANKTONCLAS_MODES = ("tf", "torch", "caffe")
RESIZE = ("letterbox", "stretch")  # card key resize; stretch = plain resize to a square, as planktonclas
SAFE_MODE_HINT = (
    "set `model.safe_mode: false` in the use-case config (or `aquaflow predict --no-safe-mode`) "
    "only if you trust the file"
)


class KerasModelError(ValueError):
    """A Keras model or its configuration cannot be used; the message names the file or key."""


def tf_setup(threads: int = 1) -> Any:
    """Import Keras on the TensorFlow backend with `threads` compute threads; return the module."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with contextlib.suppress(ImportError):  # triton (torchvision loads it) segfaults after TensorFlow
        import triton  # noqa: F401
    try:
        import keras
        import tensorflow as tf
    except ImportError as exc:  # the optional extra is missing
        raise KerasModelError(
            "model.backend 'keras' needs TensorFlow: pip install 'aquaflow[keras]'"
        ) from exc
    if keras.backend.backend() != "tensorflow":
        raise KerasModelError(
            f"KERAS_BACKEND is {keras.backend.backend()!r}; the keras backend needs 'tensorflow'"
        )
    try:
        tf.config.threading.set_intra_op_parallelism_threads(max(1, threads))
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # already initialised in this process: keep its settings
        pass
    return keras


def library_versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


# --- safe loading -----------------------------------------------------------------------------


def architecture_config(path: str | Path) -> dict[str, Any]:
    """The model architecture JSON stored in a .keras archive or a legacy .h5 file (no code run)."""
    path = Path(path)
    try:
        if path.suffix == ".keras":
            with zipfile.ZipFile(path) as zf:
                return json.loads(zf.read("config.json"))
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
            if raw is None:
                raise KerasModelError(f"{path}: an .h5 file without a model architecture (weights only?)")
            return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise KerasModelError(
            f"{path}: not a readable Keras model file ({type(exc).__name__}: {exc})"
        ) from exc


def lambda_layers(cfg: Any) -> list[str]:
    """Names of every Lambda layer in an architecture config, nested models included."""
    found: list[str] = []
    if isinstance(cfg, dict):
        if cfg.get("class_name") == "Lambda":
            found.append(str((cfg.get("config") or {}).get("name", "?")))
        for value in cfg.values():
            found += lambda_layers(value)
    elif isinstance(cfg, list):
        for value in cfg:
            found += lambda_layers(value)
    return found


def load_model(path: str | Path, safe_mode: bool = True, threads: int = 1) -> Any:
    """Load a .keras/.h5 classifier without its training state; refuse code in the file by default."""
    path = Path(path)
    if not path.is_file():
        raise KerasModelError(f"Keras model file not found: {path}")
    if path.suffix not in MODEL_SUFFIXES:
        raise KerasModelError(f"{path}: not a Keras model file (expected {', '.join(MODEL_SUFFIXES)})")
    if safe_mode:
        lambdas = lambda_layers(architecture_config(path))
        if lambdas:
            raise KerasModelError(
                f"{path}: refused to load: Lambda layer(s) {', '.join(lambdas)} run arbitrary Python "
                f"code from the model file; {SAFE_MODE_HINT}"
            )
    keras = tf_setup(threads)
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=safe_mode)
    except ValueError as exc:
        if "safe_mode" in str(exc):
            raise KerasModelError(f"{path}: refused to load: {exc}; {SAFE_MODE_HINT}") from exc
        raise KerasModelError(f"{path}: cannot load the Keras model: {exc}") from exc


# --- preprocessing ----------------------------------------------------------------------------


def check_normalization(norm: Any, origin: str) -> dict[str, Any]:
    """Validate a Keras card's `normalization` block; return it."""
    if not isinstance(norm, dict) or norm.get("preprocess") not in PREPROCESS:
        raise KerasModelError(
            f"{origin}: model card key 'normalization.preprocess' must be one of {PREPROCESS}, "
            f"got {norm.get('preprocess') if isinstance(norm, dict) else norm!r}"
        )
    kind = norm["preprocess"]

    def three(key: str, positive: bool = False) -> None:
        v = norm.get(key)
        if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
            raise KerasModelError(f"{origin}: model card key 'normalization.{key}' must be 3 numbers")
        if positive and any(x <= 0 for x in v):
            raise KerasModelError(f"{origin}: model card key 'normalization.{key}' must be positive")

    if kind == "mean_std":
        three("mean")
        three("std", positive=True)
    elif kind == "planktonclas":
        if norm.get("mode") not in PLANKTONCLAS_MODES:
            raise KerasModelError(
                f"{origin}: model card key 'normalization.mode' must be one of {PLANKTONCLAS_MODES}"
            )
        three("mean_rgb")
        if norm["mode"] == "torch":
            three("std_rgb", positive=True)
    elif kind == "keras_applications":
        module = norm.get("module")
        keras = tf_setup()
        if not isinstance(module, str) or not hasattr(
            getattr(keras.applications, module, None), "preprocess_input"
        ):
            raise KerasModelError(
                f"{origin}: model card key 'normalization.module' must name a keras.applications module "
                f"with preprocess_input (e.g. efficientnet_v2, densenet, xception), got {module!r}"
            )
    return norm


def preprocess(images: np.ndarray, norm: dict[str, Any]) -> np.ndarray:
    """uint8 NHWC RGB -> the float32 input the model was trained on (card `normalization`)."""
    kind = norm["preprocess"]
    if kind == "none":
        return images.astype(np.float32)
    if kind == "scale":
        return images.astype(np.float32) / np.float32(255.0)
    if kind == "mean_std":
        mean = np.asarray(norm["mean"], np.float32) * 255.0
        std = np.asarray(norm["std"], np.float32) * 255.0
        return (images.astype(np.float32) - mean) / std
    if kind == "planktonclas":  # planktonclas.data_utils.preprocess_batch, in its float64 order
        x = images.astype(np.float64) - np.asarray(norm["mean_rgb"], np.float64)
        mode = norm["mode"]
        if mode == "caffe":
            x = x[..., ::-1]
        elif mode == "tf":
            x /= 127.5
        elif mode == "torch":
            x /= np.asarray(norm["std_rgb"], np.float64)
        return x.astype(np.float32)
    if kind == "keras_applications":
        keras = tf_setup()
        fn = getattr(keras.applications, norm["module"]).preprocess_input
        return np.asarray(fn(images.astype(np.float32)), np.float32)
    raise KerasModelError(f"unknown normalization.preprocess {kind!r}; allowed: {PREPROCESS}")


def application_module(arch: str) -> str:
    """The keras.applications module of an architecture (holds its preprocess_input)."""
    keras = tf_setup()
    fn = getattr(keras.applications, arch, None)
    if fn is None or not callable(fn):
        raise KerasModelError(f"key 'model.arch': {arch!r} is not a keras.applications architecture")
    return fn.__module__.rsplit(".", 1)[-1]


# --- model cards ------------------------------------------------------------------------------


def validate_card(card: dict[str, Any], origin: str = "model card") -> dict[str, Any]:
    """Check a Keras model card: the common keys (aquaflow.models.artifacts), resize and preprocessing."""
    from aquaflow.models.artifacts import ModelCardError
    from aquaflow.models.artifacts import validate_card as validate_common

    try:
        validate_common(card, origin)
    except ModelCardError as exc:
        raise KerasModelError(str(exc)) from exc
    if card.get("format", "keras") != "keras":
        raise KerasModelError(
            f"{origin}: model card key 'format' is {card.get('format')!r}, expected 'keras'"
        )
    classes = card.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c for c in classes):
        raise KerasModelError(f"{origin}: model card key 'classes' must be a non-empty list of names")
    if len(set(classes)) != len(classes):
        raise KerasModelError(f"{origin}: model card key 'classes' repeats a name")
    size = card.get("input_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 16:
        raise KerasModelError(f"{origin}: model card key 'input_size' must be an integer >= 16")
    if card.get("resize", "letterbox") not in RESIZE:
        raise KerasModelError(f"{origin}: model card key 'resize' must be one of {RESIZE}")
    check_normalization(card.get("normalization"), origin)
    return card


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def planktonclas_folder(folder: str | Path) -> tuple[Path, dict[str, Any]]:
    """(checkpoint, card) of a model folder as planktonclas writes it.

    ckpts/<best_model.keras | final_model.keras | final_model.h5>, conf/conf.json (model.image_size,
    model.preprocess_mode, model.modelname, dataset.mean_RGB/std_RGB) and dataset_files/classes.txt.
    The checkpoint is the one conf.json's testing.ckpt_name names, else planktonclas's own order.
    """
    folder = Path(folder)
    conf_path = folder / "conf" / "conf.json"
    classes_path = folder / "dataset_files" / "classes.txt"
    for p in (conf_path, classes_path):
        if not p.is_file():
            raise KerasModelError(
                f"{folder}: not a planktonclas model folder ({p.relative_to(folder)} missing)"
            )
    conf = read_json(conf_path)

    def key(group: str, name: str) -> Any:
        value = (conf.get(group) or {}).get(name)
        if value is None:
            raise KerasModelError(f"{conf_path}: key '{group}.{name}' is missing")
        return value

    ckpts = folder / "ckpts"
    named = (conf.get("testing") or {}).get("ckpt_name")
    order = [named] if named else []
    order += ["best_model.keras", "final_model.keras", "final_model.h5"]
    ckpt = next((ckpts / n for n in order if (ckpts / n).is_file()), None)
    if ckpt is None:
        raise KerasModelError(f"{ckpts}: none of {', '.join(order)} exists")
    mode = key("model", "preprocess_mode")
    norm: dict[str, Any] = {
        "preprocess": "planktonclas",
        "mode": mode,
        "mean_rgb": key("dataset", "mean_RGB"),
    }
    if mode == "torch":
        norm["std_rgb"] = key("dataset", "std_RGB")
    card = {
        "format": "keras",
        "backend": "keras",
        "task": "classify",
        "arch": str(key("model", "modelname")),
        "classes": _read_lines(classes_path),
        "input_size": int(key("model", "image_size")),
        "resize": "stretch",
        "normalization": norm,
        "preprocessing": "RGB uint8, resized to input_size x input_size (bilinear, no letterbox), "
        "planktonclas preprocess_batch",
    }
    return ckpt, validate_card(card, str(conf_path))


def locate(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """(model file, card) of what `model.path` points at.

    A planktonclas folder; a folder holding model_card.json and the model file it names; a card
    file; or a .keras/.h5 file with a model_card.json beside it.
    """
    p = Path(path)
    if not p.exists():
        raise KerasModelError(f"model.path {p} does not exist")
    if p.is_dir() and (p / "conf" / "conf.json").is_file():
        return planktonclas_folder(p)
    if p.is_file() and p.suffix in MODEL_SUFFIXES:
        card_path, model_file = p.parent / CARD, p
    else:
        card_path = p / CARD if p.is_dir() else p
        model_file = None
    if not card_path.is_file():
        raise KerasModelError(
            f"{p}: no {CARD} (a Keras model needs one naming classes, input_size and normalization) "
            "and not a planktonclas folder (conf/conf.json, dataset_files/classes.txt, ckpts/)"
        )
    card = validate_card(dict(read_json(card_path)), str(card_path))
    if model_file is None:
        model_file = card_path.parent / card.get("weights", WEIGHTS)
    if not model_file.is_file():
        raise KerasModelError(f"{card_path}: the model file it names is missing: {model_file}")
    return model_file, card


def output_layers(model: Any) -> tuple[Any, bool]:
    """(features tensor = input of the last Dense layer, whether the output is already softmax)."""
    keras = tf_setup()
    dense = next((la for la in reversed(model.layers) if isinstance(la, keras.layers.Dense)), None)
    if dense is None:
        raise KerasModelError(f"model {model.name!r} has no Dense layer: not a classifier head")
    last = model.layers[-1]
    act = last.get_config().get("activation")
    if isinstance(last, keras.layers.Softmax) or act == "softmax":
        return dense.input, True
    if act in ("linear", None) and last is dense:
        return dense.input, False
    raise KerasModelError(
        f"model {model.name!r}: last layer {last.name!r} ({type(last).__name__}, activation {act!r}) "
        "gives neither softmax probabilities nor logits"
    )


def check_model(model: Any, card: dict[str, Any], origin: str) -> None:
    """The model's output and input agree with the card's classes and input size."""
    out = model.output_shape
    out = out[0] if isinstance(out, list) else out
    if out[-1] != len(card["classes"]):
        raise KerasModelError(
            f"{origin}: the model has {out[-1]} outputs but the class list has {len(card['classes'])} names"
        )
    shape = model.input_shape
    shape = shape[0] if isinstance(shape, list) else shape
    if len(shape) != 4 or shape[-1] != 3:
        raise KerasModelError(f"{origin}: input shape {shape} is not (batch, height, width, 3)")
    for side in shape[1:3]:
        if side is not None and side != card["input_size"]:
            raise KerasModelError(
                f"{origin}: the model takes {shape[1:3]} pixels, the card says {card['input_size']}"
            )
    output_layers(model)


def import_model(
    spec: dict[str, Any],
    weights_out: str | Path,
    card_out: str | Path,
    mlflow_cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Bring a given Keras model into the workflow as model.keras + model_card.json.

    `spec`: model.source / path / package / subdir / uri / sha256 / safe_mode. The model is loaded
    (safely unless the config's safe_mode says otherwise) to check it against its card; a .keras file
    is copied byte for byte (its id stays its sha256), an .h5 file is re-saved as .keras (the card
    records the original's sha256). The card written keeps no `safe_mode`: each step that loads the
    model is given the config's setting.
    """
    safe = spec.get("safe_mode", True) is not False
    with tempfile.TemporaryDirectory() as work:
        model_file, card = locate(artifacts.source_folder(spec, mlflow_cfg, Path(work)))
        digest = sha256_file(model_file)
        pin = (spec.get("sha256") or "").removeprefix("sha256:").lower()
        if pin and pin != digest:
            raise KerasModelError(f"{model_file}: sha256 {digest} differs from model.sha256 {pin}")
        model = load_model(model_file, safe_mode=safe)
        check_model(model, card, str(model_file))
        with atomic_path(weights_out) as tmp:
            if model_file.suffix == ".keras":
                shutil.copyfile(model_file, tmp)
            else:
                model.save(tmp.with_suffix(".keras"))
                tmp.with_suffix(".keras").rename(tmp)
    card = {
        **{k: v for k, v in card.items() if k not in ("id", "weights", "safe_mode")},
        "id": sha256_file(weights_out),
        "format": "keras",
        "weights": Path(weights_out).name,
        "backend": "keras",
        "imported_from": {
            **{k: v for k, v in spec.items() if v not in (None, "")},
            "file": model_file.name,
            "sha256": digest,
        },
        "libraries": library_versions(),
    }
    artifacts.write_card(card, card_out)
    log.info(
        "imported Keras model %s (%s, %d classes) from %s",
        card["id"][:16],
        card["arch"],
        len(card["classes"]),
        model_file,
    )
    return card


# --- inference ----------------------------------------------------------------------------------


@dataclass
class KerasPredictor:
    """A Keras classifier for the shard engine: uint8 NCHW torch batch -> (probs, features) numpy.

    The forward pass is one traced tf.function (variable batch size) returning the softmax output
    and the input of the last Dense layer (the embedding), fed plain numpy batches.
    """

    model: Any
    card: dict[str, Any]
    device: Any  # torch.device the engine pins memory for (always the CPU: TF copies itself)
    forward: Any
    softmax: bool
    backend: str = "keras"

    @classmethod
    def load(
        cls,
        weights: str | Path,
        card: str | Path | dict,
        device: str = "auto",
        threads: int = 1,
        safe_mode: bool = True,
    ) -> KerasPredictor:
        """`safe_mode` is the caller's (config or command-line flag); a card's own key is ignored."""
        import torch

        card = dict(card) if isinstance(card, dict) else read_json(card)
        validate_card(card, str(weights))
        keras = tf_setup(threads)
        import tensorflow as tf

        model = load_model(weights, safe_mode=safe_mode, threads=threads)
        check_model(model, card, str(weights))
        feats, is_softmax = output_layers(model)
        both = keras.Model(model.inputs, [model.outputs[0], feats])
        size = card["input_size"]
        where = "/CPU:0" if device == "cpu" or not tf.config.list_physical_devices("GPU") else "/GPU:0"

        @tf.function(
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.float32)], reduce_retracing=True
        )
        def forward(x):
            with tf.device(where):
                return both(x, training=False)

        return cls(model, card, torch.device("cpu"), forward, is_softmax)

    def predict_numpy(self, images_nhwc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = preprocess(images_nhwc, self.card["normalization"])
        out, feats = self.forward(x)
        out = out.numpy().astype(np.float32)
        if not self.softmax:
            out = out - out.max(axis=1, keepdims=True)
            out = np.exp(out)
            out /= out.sum(axis=1, keepdims=True)
        feats = feats.numpy().astype(np.float32)
        return out, feats.reshape(len(feats), -1)

    def __call__(self, images: Any) -> tuple[np.ndarray, np.ndarray]:
        return self.predict_numpy(np.ascontiguousarray(images.permute(0, 2, 3, 1).numpy()))
