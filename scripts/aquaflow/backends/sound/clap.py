"""The CLAP audio tower (transformers `ClapAudioModelWithProjection`) from a local folder only.

The folder holds what `save_pretrained` writes (config.json, model.safetensors) plus the feature
extractor's preprocessor_config.json: e.g. a download of the BioLingual checkpoint made once
elsewhere, or the tiny random tower the tests build. Nothing is ever fetched from a hub
(`local_files_only=True`); weights load with safetensors (no pickle).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from aquaflow.io import sha256_file


def tower_id(folder: str | Path) -> str:
    """Identity of a CLAP tower folder: SHA-256 of its weights file(s), in name order."""
    h = hashlib.sha256()
    for p in sorted(Path(folder).glob("*.safetensors")):
        h.update(sha256_file(p).encode())
    return h.hexdigest()


class ClapTower:
    """Windows (n, samples) at the tower's sampling rate -> audio embeddings (n, projection_dim)."""

    def __init__(self, folder: str | Path, device: str = "cpu"):
        from transformers import ClapAudioModelWithProjection, ClapFeatureExtractor

        self.folder = Path(folder)
        if not (self.folder / "config.json").is_file():
            raise FileNotFoundError(f"no CLAP audio model in {self.folder} (config.json missing)")
        self.model = ClapAudioModelWithProjection.from_pretrained(
            self.folder, local_files_only=True, use_safetensors=True
        ).eval()
        self.model.to(device)
        self.device = device
        self.extractor = ClapFeatureExtractor.from_pretrained(self.folder, local_files_only=True)
        self.sample_rate = int(self.extractor.sampling_rate)
        self.dim = int(self.model.config.projection_dim)

    @property
    def id(self) -> str:
        return tower_id(self.folder)

    @torch.inference_mode()
    def embed(self, windows: np.ndarray) -> np.ndarray:
        if not len(windows):
            return np.zeros((0, self.dim), np.float32)
        inputs = self.extractor(
            list(np.asarray(windows, dtype=np.float32)), sampling_rate=self.sample_rate, return_tensors="pt"
        )
        out = self.model(**{k: v.to(self.device) for k, v in inputs.items()})
        return out.audio_embeds.float().cpu().numpy()
