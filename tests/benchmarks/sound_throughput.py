"""Windows per second of the two sound backends (10 s windows at 48 kHz, the UC6 settings).

`sound_cnn`: log-mel (n_fft 2048, hop 1024, 64 mels) + a timm CNN (`--arch`, random weights: the
speed does not depend on them). `clap`: a CLAP audio tower of the default `ClapAudioConfig` size
(HTSAT as in the unfused LAION / BioLingual checkpoints, random weights: no download) + the head.
Prints `name: value` lines. Run by hand: .venv/bin/python tests/benchmarks/sound_throughput.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))


def clap_model(folder: Path, rate: int) -> tuple[Path, dict]:
    """A sound model folder with a default-size random CLAP tower and its head."""
    import torch
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

    from aquaflow.backends.sound.model import CLAP_FOLDER, build
    from aquaflow.backends.torch_model import save_weights
    from tests.sound_models import CLASSES

    torch.manual_seed(0)
    tower = ClapAudioModelWithProjection(ClapAudioConfig(enable_fusion=False))
    tower.save_pretrained(folder / CLAP_FOLDER)
    ClapFeatureExtractor(sampling_rate=rate, truncation="rand_trunc", padding="repeatpad").save_pretrained(
        folder / CLAP_FOLDER
    )
    card = {
        "backend": "clap",
        "task": "sound",
        "arch": "clap",
        "classes": CLASSES,
        "audio": {
            "sample_rate": rate,
            "length_s": 10.0,
            "distance_edges_km": list(range(11)),
            "embedding_dim": tower.config.projection_dim,
            "hidden": 64,
        },
    }
    save_weights(build(card), folder / "model.safetensors")
    return folder, card


def main() -> None:
    import numpy as np
    import torch

    from aquaflow.backends.sound.model import SoundModel
    from aquaflow.io import read_json
    from tests.sound_models import untrained_cnn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--windows", type=int, default=64)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--arch", default="test_convnext")
    p.add_argument("--backends", nargs="+", default=["sound_cnn", "clap"])
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    rate = 48000
    print(f"threads: {a.threads}; load average: {os.getloadavg()[0]:.1f}")
    x = np.random.default_rng(0).normal(0, 0.01, (a.batch, rate * 10)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        for backend in a.backends:
            if backend == "clap":
                folder, card = clap_model(Path(tmp) / "clap", rate)
            else:
                folder = untrained_cnn(Path(tmp) / "cnn", rate=rate, length_s=10.0)
                card = read_json(folder / "model_card.json")
                card["arch"] = a.arch
                card["audio"]["mel"] = {
                    "n_fft": 2048,
                    "hop_length": 1024,
                    "n_mels": 64,
                    "fmin": 10.0,
                    "fmax": None,
                }
                if a.arch != "test_convnext":
                    from aquaflow.backends.sound.model import build
                    from aquaflow.backends.torch_model import save_weights

                    save_weights(build(card), folder / "model.safetensors")
            model = SoundModel(folder / "model.safetensors", card)
            model.predict(x[:2])  # warm-up
            t0 = time.perf_counter()
            n = 0
            while n < a.windows:
                model.predict(x)
                n += len(x)
            dt = time.perf_counter() - t0
            name = f"{backend}({a.arch})" if backend == "sound_cnn" else backend
            print(f"{name}_windows_per_second: {n / dt:.2f} ({n} windows, {dt:.1f} s)")


if __name__ == "__main__":
    main()
