"""Sound models the tests build without training (plumbing tests) and tiny recordings."""

from pathlib import Path

import numpy as np
import soundfile as sf

from aquaflow.backends.sound.model import build
from aquaflow.backends.torch_model import save_weights
from aquaflow.io import sha256_file
from aquaflow.models.artifacts import write_card

CLASSES = ["none", "cargo", "passenger", "fishing"]


def untrained_cnn(folder: Path, rate: int = 16000, length_s: float = 1.0, seed: int = 0) -> Path:
    """A random test_convnext sound model folder (model.safetensors + model_card.json)."""
    import torch

    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    card = {
        "format": "safetensors",
        "weights": "model.safetensors",
        "backend": "sound_cnn",
        "task": "sound",
        "arch": "test_convnext",
        "classes": CLASSES,
        "input_size": int(rate * length_s),
        "normalization": {},
        "audio": {
            "sample_rate": rate,
            "length_s": length_s,
            "hop_s": length_s,
            "mel": {"n_fft": 512, "hop_length": 256, "n_mels": 32, "fmin": 10.0, "fmax": None},
            "distance_edges_km": list(range(11)),
            "embedding_dim": 0,
            "hidden": 64,
        },
    }
    net = build(card)
    net.mean.fill_(-80.0)
    net.std.fill_(20.0)
    save_weights(net, folder / "model.safetensors")
    write_card({**card, "id": sha256_file(folder / "model.safetensors")}, folder / "model_card.json")
    return folder


def noise(path: Path, seconds: float, rate: int = 16000, seed: int = 0, **kw) -> Path:
    rng = np.random.default_rng(seed)
    sf.write(path, rng.uniform(-0.1, 0.1, round(seconds * rate)), rate, **kw)
    return path


def tiny_clap(folder: Path, rate: int = 16000, length_s: float = 1.0) -> Path:
    """A tiny randomly initialised CLAP audio tower + feature extractor, saved as a user's
    downloaded checkpoint would be (config.json, model.safetensors, preprocessor_config.json)."""
    import torch
    from transformers import ClapAudioConfig, ClapAudioModelWithProjection, ClapFeatureExtractor

    torch.manual_seed(0)
    cfg = ClapAudioConfig(
        depths=[1, 1],
        num_attention_heads=[2, 2],
        hidden_size=32,
        patch_embeds_hidden_size=16,
        projection_dim=16,
        num_mel_bins=16,
        spec_size=64,
        window_size=4,
        patch_size=4,
        enable_fusion=False,
    )
    ClapAudioModelWithProjection(cfg).save_pretrained(folder)
    ClapFeatureExtractor(
        feature_size=16,
        sampling_rate=rate,
        hop_length=160,
        max_length_s=length_s,
        fft_window_size=400,
        frequency_min=50,
        frequency_max=rate // 2,
        truncation="rand_trunc",
        padding="repeatpad",
    ).save_pretrained(folder)
    return folder
