"""Keras backend benchmark: prints `name: value` lines (not a timed test; run it by hand).

A planktonclas-layout EfficientNetV2B0 (the VLIZ architecture; random weights, accuracy is
irrelevant) against timm's tf_efficientnetv2_b0 on the torch backend, same input size, same
threads. (1) batching paths of the Keras forward pass on decoded uint8 batches in memory:
the backend's traced tf.function on numpy batches, `model.predict` per batch, and a tf.data
pipeline (from_tensor_slices -> map(preprocess) -> batch -> prefetch) into `model.predict`;
(2) the shard engine end to end (decode + resize + forward + Parquet) on N re-encoded demo images.

    .venv/bin/python tests/benchmarks/keras_inference.py --n 1000 --size 100 --threads 2
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import torch  # noqa: E402,F401  (before TensorFlow)

from aquaflow.backends import keras_model as kb  # noqa: E402
from aquaflow.backends import load_predictor  # noqa: E402
from aquaflow.backends import torch_model as models  # noqa: E402
from aquaflow.data.fetch import package_root  # noqa: E402
from aquaflow.engine import infer  # noqa: E402
from aquaflow.io import write_json  # noqa: E402
from aquaflow.synthetic.flowcam import perturbed_copies  # noqa: E402


def keras_model(work: Path, size: int, classes: list[str]) -> tuple[Path, dict]:
    keras = kb.tf_setup()
    base = keras.applications.EfficientNetV2B0(include_top=False, weights=None, input_shape=(size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base.output)
    x = keras.layers.Dense(1024, activation="relu")(x)
    out = keras.layers.Dense(len(classes), activation="softmax")(x)
    keras.Model(base.input, out).save(work / "model.keras")
    norm = {"preprocess": "planktonclas", "mode": "tf", "mean_rgb": [130.0, 130.0, 130.0]}
    card = {"format": "keras", "arch": "EfficientNetV2B0", "classes": classes, "input_size": size}
    card.update({"normalization": norm, "resize": "stretch"})
    write_json(card, work / "model_card.json")
    return work / "model.keras", card


def torch_model(work: Path, size: int, classes: list[str], arch: str) -> tuple[Path, dict]:
    net = models.build(arch, len(classes))
    models.save_weights(net, work / f"{arch}.safetensors")
    card = {"format": "safetensors", "backend": "torch", "arch": arch, "classes": classes, "input_size": size}
    card["normalization"] = {"mean": list(models.IMAGENET_MEAN), "std": list(models.IMAGENET_STD)}
    return work / f"{arch}.safetensors", card


def batching_paths(weights: Path, card: dict, threads: int, batch: int, n: int) -> dict[str, float]:
    keras = kb.tf_setup(threads)
    import tensorflow as tf

    pred = load_predictor(weights, card, "cpu", threads)
    size = card["input_size"]
    imgs = np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    norm = card["normalization"]
    out: dict[str, float] = {}

    def timed(name, fn):
        fn(imgs[:batch])  # trace / warm up
        t0 = time.perf_counter()
        fn(imgs)
        out[name] = n / (time.perf_counter() - t0)

    def numpy_tf_function(x):
        for i in range(0, len(x), batch):
            pred.predict_numpy(x[i : i + batch])

    def predict_per_batch(x):
        for i in range(0, len(x), batch):
            pred.model.predict(kb.preprocess(x[i : i + batch], norm), batch_size=batch, verbose=0)

    mean = tf.constant(norm["mean_rgb"], tf.float32)

    def tf_data(x):
        ds = tf.data.Dataset.from_tensor_slices(x).batch(batch)
        ds = ds.map(lambda b: (tf.cast(b, tf.float32) - mean) / 127.5, num_parallel_calls=tf.data.AUTOTUNE)
        pred.model.predict(ds.prefetch(tf.data.AUTOTUNE), verbose=0)

    timed("keras numpy batches -> tf.function (backend)", numpy_tf_function)
    timed("keras model.predict per batch", predict_per_batch)
    timed("keras tf.data pipeline -> model.predict", tf_data)
    del keras
    return out


def end_to_end(files: list[str], weights: Path, card: dict, threads: int, batch: int, backend: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        write_json(card, t / "card.json")
        inputs = pd.DataFrame({"seq": np.arange(len(files)), "source": files})

        def shard(rows: pd.DataFrame, name: str) -> dict:
            return infer.run_shard(
                rows,
                weights,
                t / "card.json",
                t / f"{name}.parquet",
                t / f"{name}_rejected.parquet",
                t / f"{name}.json",
                batch_size=batch,
                workers=0,
                threads=threads,
                device="cpu",
                backend=backend,
            )

        shard(inputs[:batch], "warmup")
        t0 = time.perf_counter()
        s = shard(inputs, "timed")
        assert s["predicted"] == len(files)
        return len(files) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next(
        (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), "?"
    )
    print(f"machine: {model_name}, {args.threads} threads, python {platform.python_version()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        demo = package_root("planktonclas") / "resources" / "demo-images"
        classes = sorted(p.name for p in demo.iterdir() if p.is_dir())
        files = [str(p) for p in perturbed_copies(demo, work / "imgs", args.n, seed=0)]
        kw, kc = keras_model(work, args.size, classes)
        for name, v in batching_paths(kw, kc, args.threads, args.batch, 512).items():
            print(f"{name} (model only, images/s): {v:.0f}")
        v = end_to_end(files, kw, kc, args.threads, args.batch, "auto")
        print(f"keras EfficientNetV2B0 end to end (images/s): {v:.0f}")
        tw, tc = torch_model(work, args.size, classes, "tf_efficientnetv2_b0")
        for backend in ("eager", "onnx"):
            v = end_to_end(files, tw, tc, args.threads, args.batch, backend)
            print(f"torch tf_efficientnetv2_b0 {backend} end to end (images/s): {v:.0f}")


if __name__ == "__main__":
    main()
