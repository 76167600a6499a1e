"""INT8 static quantisation of a classifier with ONNX Runtime, side by side with fp32: prints
`name: value` lines (not a timed test; run it by hand).

The model folder (model.safetensors + model_card.json, e.g. results/flowcam/model of `make demo`)
is exported to ONNX as bulk inference does (uint8 in, logits + features out), then quantised
statically (QDQ, per-channel int8 weights, uint8 activations, --calibration on the
training-split images of the planktonclas demo). Reported for both: macro-F1 and accuracy on the
test split, top-1 agreement with fp32 on all 105 demo images, model-only img/s (batches of 64)
and decode + model img/s (the demo images repeated, read, decoded, letterboxed, predicted; one
process, as in a shard with 0 workers).

    .venv/bin/python tests/benchmarks/quantize.py --model results/flowcam/model [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from aquaflow.backends import torch_model  # noqa: E402
from aquaflow.data import imaging, loader  # noqa: E402
from aquaflow.data.dataset import build_manifest  # noqa: E402
from aquaflow.data.fetch import package_root  # noqa: E402
from aquaflow.io import read_json  # noqa: E402
from tests.benchmarks.loader import print_machine  # noqa: E402
from tests.unit.test_dataset import FLOWCAM  # noqa: E402


def batches(images: list[np.ndarray], size: int, n: int = 64):
    for i in range(0, len(images), n):
        yield np.stack([loader.chw(im, size).numpy() for im in images[i : i + n]])


class Calibration:
    """onnxruntime CalibrationDataReader over uint8 batches."""

    def __init__(self, arrays: list[np.ndarray]):
        self.it = iter(arrays)

    def get_next(self):
        x = next(self.it, None)
        return None if x is None else {"images": x}


def quantise(fp32: Path, out: Path, calibration: list[np.ndarray], method: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out.with_name("pre.onnx")
    quant_pre_process(str(fp32), str(pre))
    quantize_static(
        str(pre),
        str(out),
        Calibration(calibration),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        weight_type=QuantType.QInt8,
        activation_type=QuantType.QUInt8,
        calibrate_method={
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[method],
    )


def top1(session, arrays: list[np.ndarray]) -> np.ndarray:
    return np.concatenate([session.run(None, {"images": x})[0].argmax(1) for x in arrays])


def model_rate(session, size: int, reps: int) -> float:
    x = np.random.default_rng(0).integers(0, 256, (64, 3, size, size), dtype=np.uint8)
    session.run(None, {"images": x})
    t0 = time.perf_counter()
    for _ in range(reps):
        session.run(None, {"images": x})
    return reps * 64 / (time.perf_counter() - t0)


def end_to_end_rate(session, paths: list[Path], size: int) -> float:
    t0 = time.perf_counter()
    for i in range(0, len(paths), 64):
        x = np.stack([loader.chw(imaging.load(p).image, size).numpy() for p in paths[i : i + 64]])
        session.run(None, {"images": x})
    return len(paths) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True, help="folder with model.safetensors + model_card.json")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=1000, help="images for the decode + model rate")
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--calibration", choices=["minmax", "entropy", "percentile"], default="minmax")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    folder = Path(a.model)
    card = read_json(folder / "model_card.json")
    size, classes = card["input_size"], card["classes"]
    predictor = torch_model.Predictor.load(folder / "model.safetensors", card, "cpu", a.threads, "eager")
    raw = package_root("planktonclas") / "resources"
    root = raw / FLOWCAM["images"]
    manifest, _, _ = build_manifest(raw, FLOWCAM)
    images = [imaging.load(root / p).image for p in manifest["path"]]
    y = np.array([classes.index(lab) for lab in manifest["label"]])
    split = manifest["split"].to_numpy()
    arrays = list(batches(images, size))
    train_idx = np.flatnonzero(split == "train")
    calibration = list(batches([images[i] for i in train_idx], size, 2))  # equal sizes (histograms)
    paths = [root / p for p in manifest["path"]] * (a.n // len(manifest) + 1)
    paths = paths[: a.n]
    print_machine(a.threads)
    print(f"load_average_before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"model: {card['arch']} {size} px, id {card['id'][:16]}")
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        fp32.write_bytes(torch_model.onnx_bytes(predictor.net, size))
        int8 = Path(tmp) / "int8.onnx"
        quantise(fp32, int8, calibration, a.calibration)
        print(f"calibration: {a.calibration}, {len(train_idx)} training images")
        print(f"onnx_bytes: fp32 {fp32.stat().st_size}, int8 {int8.stat().st_size}")
        sessions = {"fp32": torch_model.onnx_session(str(fp32), a.threads)}
        sessions["int8"] = torch_model.onnx_session(str(int8), a.threads)
        pred = {name: top1(s, arrays) for name, s in sessions.items()}
        test = split == "test"
        for name, s in sessions.items():
            f1 = f1_score(
                y[test], pred[name][test], average="macro", labels=range(len(classes)), zero_division=0
            )
            print(f"{name}_test_macro_f1 ({test.sum()} images): {f1:.4f}")
            print(f"{name}_test_accuracy: {accuracy_score(y[test], pred[name][test]):.4f}")
            print(f"{name}_agreement_with_fp32_all_{len(y)}: {(pred[name] == pred['fp32']).mean():.4f}")
            print(f"{name}_model_only_img_s: {model_rate(s, size, a.reps):.0f}")
            print(
                f"{name}_decode_and_model_img_s ({len(paths)} images): {end_to_end_rate(s, paths, size):.0f}"
            )
    print(f"load_average_after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
