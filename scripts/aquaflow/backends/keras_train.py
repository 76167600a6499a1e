"""Fine-tuning a Keras application backbone on a manifest, tracked in MLflow like the torch runs.

The use case's training keys apply where Keras has them: epochs, batch_size, lr, optimizer,
weight_decay, scheduler (+ warmup), label_smoothing, augmentation (the same torchvision
transforms as torch training), balancing (class weights passed to `fit` as a dict, or a
class-balanced resample), class_weights overrides, seed, early_stopping (on validation macro-F1).
Images are letterboxed to model.input_size and go through the architecture's own
`preprocess_input` (recorded in the model card), so weights from disk see what they were trained on.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score

from aquaflow import plots
from aquaflow.backends import keras_model as kb
from aquaflow.backends import pretrained
from aquaflow.data import augment, balance, imaging
from aquaflow.data.dataset import manifest_hash
from aquaflow.io import atomic_path, read_json, sha256_file, write_tsv
from aquaflow.tasks.classify.metrics import classification_metrics
from aquaflow.tasks.classify.runs import log_classifier_training

log = logging.getLogger(__name__)


def build(keras: Any, arch: str, num_classes: int, size: int, weights: str | None, safe_mode: bool) -> Any:
    """keras.applications backbone (no top, average pooling) + a softmax Dense head; never downloads.

    `weights`: a `.weights.h5` file of the backbone, or a `.keras`/`.h5` model whose layers with the
    backbone's names and shapes are copied (e.g. a published classifier being fine-tuned).
    """
    app = getattr(keras.applications, arch, None)
    if app is None or not callable(app):
        raise kb.KerasModelError(f"key 'model.arch': {arch!r} is not a keras.applications architecture")
    base = app(include_top=False, weights=None, input_shape=(size, size, 3), pooling="avg")
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise kb.KerasModelError(f"key 'model.pretrained': {path} not found")
        if path.name.endswith(".weights.h5"):
            base.load_weights(path, skip_mismatch=True)
        else:
            _copy_matching(kb.load_model(path, safe_mode=safe_mode), base, path)
    out = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(base.output)
    return keras.Model(base.input, out, name=f"{arch}_classifier")


def _copy_matching(src: Any, dst: Any, origin: Path) -> None:
    own = {la.name: la for la in src._flatten_layers(include_self=False)}
    copied = 0
    for layer in dst.layers:
        other = own.get(layer.name)
        if other is None or not layer.weights:
            continue
        values = other.get_weights()
        if [v.shape for v in values] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(values)
            copied += 1
    if not copied:
        raise kb.KerasModelError(f"{origin}: no layer matches the backbone by name and shape")
    log.info("copied the weights of %d layers from %s", copied, origin)


def _load_split(
    root: Path, part: pd.DataFrame, index: dict[str, int], size: int
) -> tuple[np.ndarray, np.ndarray]:
    images = np.stack([imaging.letterbox(imaging.load(root / p).image, size) for p in part["path"]])
    return images, part["label"].map(index).to_numpy(np.int64)


def _batches(keras: Any, images, labels, cfg, num_classes, norm, train: bool) -> Any:
    """A PyDataset of (preprocessed NHWC float32, one-hot) batches; augmented and shuffled if train."""
    import torch

    transform = augment.build(cfg["augmentation"], images.shape[1]) if train else None
    rng = np.random.default_rng(cfg["seed"])

    class Batches(keras.utils.PyDataset):
        def __init__(self):
            super().__init__()
            self.order = np.arange(len(images))
            self.on_epoch_end()

        def __len__(self) -> int:
            return math.ceil(len(images) / cfg["batch_size"])

        def on_epoch_end(self) -> None:
            if not train:
                return
            if cfg["balancing"] == "resample":
                self.order = balance.resample_indices(
                    labels, num_classes, len(labels), int(rng.integers(1 << 31))
                )
            else:
                self.order = rng.permutation(len(images))

        def __getitem__(self, i: int):
            idx = self.order[i * cfg["batch_size"] : (i + 1) * cfg["batch_size"]]
            x = images[idx]
            if transform is not None:
                t = transform(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous())
                x = t.permute(0, 2, 3, 1).numpy()
            y = keras.utils.to_categorical(labels[idx], num_classes)
            return kb.preprocess(x, norm), y

    return Batches()


def _schedule(keras: Any, cfg: dict[str, Any], steps: int) -> Any:
    total, warm = max(1, cfg["epochs"] * steps), cfg["warmup_epochs"] * steps
    if cfg["scheduler"] == "cosine":
        if warm:
            return keras.optimizers.schedules.CosineDecay(
                0.0, max(1, total - warm), warmup_target=cfg["lr"], warmup_steps=warm
            )
        return keras.optimizers.schedules.CosineDecay(cfg["lr"], total)
    if cfg["scheduler"] == "step":  # x0.1 at 70 % and 90 % of training, as the torch path
        bounds = [max(1, int(0.7 * total)), max(2, int(0.9 * total))]
        return keras.optimizers.schedules.PiecewiseConstantDecay(
            bounds, [cfg["lr"], cfg["lr"] * 0.1, cfg["lr"] * 0.01]
        )
    return cfg["lr"]


def _optimizer(keras: Any, cfg: dict[str, Any], lr: Any) -> Any:
    if cfg["optimizer"] == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=cfg["weight_decay"] or None)
    if cfg["optimizer"] == "adam":
        return keras.optimizers.Adam(lr)
    return keras.optimizers.AdamW(lr, weight_decay=cfg["weight_decay"])


def class_weight_dict(labels: np.ndarray, classes: list[str], cfg: dict[str, Any]) -> dict[int, float] | None:
    """Balancing weights x overrides, as the {class index: weight} dict Keras 3 `fit` takes."""
    w = balance.class_weights(labels, len(classes), "balanced") if cfg["balancing"] == "weights" else None
    w = balance.apply_overrides(w, classes, cfg.get("class_weights") or {})
    return None if w is None else {i: float(v) for i, v in enumerate(w)}


def train(
    manifest: pd.DataFrame,
    images_root: Path,
    classes: list[str],
    model_cfg: dict[str, Any],
    cfg: dict[str, Any],
    threads: int = 1,
) -> tuple[Any, pd.DataFrame, dict[str, Any]]:
    """Fit; return (model holding the best epoch's weights, history, summary with val metrics)."""
    keras = kb.tf_setup(threads)
    keras.utils.set_random_seed(cfg["seed"])
    size, index = model_cfg["input_size"], {c: i for i, c in enumerate(classes)}
    norm = {"preprocess": "keras_applications", "module": kb.application_module(model_cfg["arch"])}
    train_part = manifest[manifest["split"] == "train"]
    if train_part.empty:
        raise ValueError("the manifest has no training images")
    val_part = manifest[manifest["split"] == "val"]
    val_part = train_part if val_part.empty else val_part
    xt, yt = _load_split(images_root, train_part, index, size)
    xv, yv = _load_split(images_root, val_part, index, size)
    safe = model_cfg.get("safe_mode", True) is not False
    spec = model_cfg.get("pretrained")
    start = pretrained.resolve(spec)  # kind package/path: the file where it lies, sha256-checked
    model = build(keras, model_cfg["arch"], len(classes), size, start, safe)
    train_ds = _batches(keras, xt, yt, cfg, len(classes), norm, train=True)
    xv_in = kb.preprocess(xv, norm)
    model.compile(
        optimizer=_optimizer(keras, cfg, _schedule(keras, cfg, len(train_ds))),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg["label_smoothing"]),
        metrics=["accuracy"],
    )
    es, state = cfg["early_stopping"], {"best": -1.0, "epoch": 0, "weights": None, "t0": time.perf_counter()}
    rows: list[dict[str, Any]] = []

    class Track(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            state["t0"] = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            probs = self.model.predict(xv_in, batch_size=cfg["batch_size"] * 2, verbose=0)
            pred = probs.argmax(1)
            f1 = f1_score(yv, pred, average="macro", labels=range(len(classes)), zero_division=0)
            lr = self.model.optimizer.learning_rate
            row = {
                "epoch": epoch + 1,
                "train_loss": float(logs["loss"]),
                "train_acc": float(logs["accuracy"]),
                "val_loss": float(-np.log(np.clip(probs[np.arange(len(yv)), yv], 1e-12, 1)).mean()),
                "val_acc": float((pred == yv).mean()),
                "val_macro_f1": float(f1),
                "lr": float(np.asarray(lr)),
                "seconds": time.perf_counter() - state["t0"],
            }
            rows.append(row)
            log.info(
                "epoch %d: %s", epoch + 1, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch")
            )
            if f1 > state["best"] + es["min_delta"]:
                state.update(best=float(f1), epoch=epoch + 1, weights=self.model.get_weights())
            elif es["patience"] and epoch + 1 - state["epoch"] >= es["patience"]:
                log.info("early stopping at epoch %d (best %d)", epoch + 1, state["epoch"])
                self.model.stop_training = True

    model.fit(
        train_ds,
        epochs=cfg["epochs"],
        class_weight=class_weight_dict(yt, classes, cfg),
        callbacks=[Track()],
        verbose=0,
    )
    model.set_weights(state["weights"])
    probs = model.predict(xv_in, batch_size=cfg["batch_size"] * 2, verbose=0)
    summary = {
        "best_epoch": state["epoch"],
        "best_val_macro_f1": state["best"],
        "epochs_run": len(rows),
        "val_metrics": classification_metrics(yv, probs, classes),
        "normalization": norm,
        "pretrained": pretrained.provenance(spec, start, None),
    }
    return model, pd.DataFrame(rows), summary


def run(
    *,
    name: str,
    settings: dict[str, Any],
    raw: str | Path,
    manifest_path: str | Path,
    classes_path: str | Path,
    out: dict[str, str | Path],
    mlflow_cfg: dict[str, Any],
    threads: int = 1,
) -> dict[str, Any]:
    """The train_keras step: fit, write model.keras + card + history + curve, then the MLflow
    training run (tracking.log_training).

    `settings`: {images (dataset folder inside raw), model, training, data (source identity)}.
    """
    manifest = pd.read_parquet(manifest_path)
    classes = read_json(classes_path)["classes"]
    model_cfg, train_cfg = settings["model"], settings["training"]
    started = time.time()
    model, history, summary = train(
        manifest, Path(raw) / settings["images"], classes, model_cfg, train_cfg, threads
    )
    with atomic_path(out["weights"]) as tmp:
        keras_tmp = tmp.with_name(tmp.name + ".keras")
        model.save(keras_tmp)
        keras_tmp.replace(tmp)
    write_tsv(history, out["history"])
    plots.training_curve(history, out["curve"])
    counts = manifest.groupby("split").size()
    card = {
        "id": sha256_file(out["weights"]),
        "format": "keras",
        "weights": Path(out["weights"]).name,
        "backend": "keras",
        "task": "classify",
        "arch": model_cfg["arch"],
        "classes": classes,
        "input_size": model_cfg["input_size"],
        "resize": "letterbox",
        "preprocessing": "RGB uint8, letterbox to square (median border colour), resize, "
        "keras.applications preprocess_input of the architecture",
        "normalization": summary["normalization"],
        "pretrained": summary["pretrained"],
        "training": {
            "manifest_sha256": manifest_hash(manifest),
            "images": {str(k): int(v) for k, v in counts.items()},
            "config": train_cfg,
            "epochs_run": summary["epochs_run"],
            "best_epoch": summary["best_epoch"],
        },
        "metrics": {
            "val_macro_f1": summary["best_val_macro_f1"],
            "val_accuracy": summary["val_metrics"]["accuracy"],
        },
        "data": {"source": settings.get("data", {})},
        "libraries": kb.library_versions(),
    }
    return log_classifier_training(
        usecase=name,
        card=card,
        out=out,
        settings=settings,
        images=len(manifest),
        history=history,
        val_metrics=summary["val_metrics"],
        best={"best_val_macro_f1": summary["best_val_macro_f1"], "best_epoch": summary["best_epoch"]},
        mlflow_cfg=mlflow_cfg,
        started=started,
    )
