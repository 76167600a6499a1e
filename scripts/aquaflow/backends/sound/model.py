"""A trained sound model folder (card + weights [+ clap/]) -> per-window predictions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from aquaflow.backends.sound.features import log_mel
from aquaflow.backends.sound.nets import EmbeddingHead, MelCNN
from aquaflow.backends.torch_model import read_state_dict
from aquaflow.models import artifacts
from aquaflow.tasks.sound.metrics import coral_outputs

BACKENDS = ("sound_cnn", "clap")
CLAP_FOLDER = "clap"  # the audio tower's folder inside a clap model folder


def build(card: dict[str, Any]) -> torch.nn.Module:
    """The untrained network a card describes."""
    n_cls, n_bins = len(card["classes"]), len(card["audio"]["distance_edges_km"])
    if card["backend"] == "sound_cnn":
        return MelCNN(card["arch"], n_cls, n_bins)
    return EmbeddingHead(int(card["audio"]["embedding_dim"]), n_cls, n_bins, int(card["audio"]["hidden"]))


class SoundModel:
    """Loads either backend; `predict(windows)` gives class probabilities, CORAL outputs and the
    window embeddings (the CNN's pooled features, or the CLAP tower's) for drift."""

    def __init__(self, weights: str | Path, card: dict[str, Any], device: str = "cpu"):
        if card.get("task") != "sound" or card.get("backend") not in BACKENDS:
            raise ValueError(f"not a sound model: task {card.get('task')!r}, backend {card.get('backend')!r}")
        self.card, self.device = card, torch.device(device)
        self.net = build(card)
        self.net.load_state_dict(read_state_dict(weights), strict=True)
        self.net.eval().to(self.device)
        self.tower = None
        if card["backend"] == "clap":
            from aquaflow.backends.sound.clap import ClapTower

            self.tower = ClapTower(Path(weights).parent / CLAP_FOLDER, device)

    @property
    def sample_rate(self) -> int:
        return int(self.card["audio"]["sample_rate"])

    def features(self, windows: np.ndarray) -> np.ndarray:
        """What the network reads: log-mel spectrograms, or CLAP embeddings."""
        if self.tower is not None:
            return self.tower.embed(windows)
        return log_mel(windows, self.sample_rate, self.card["audio"]["mel"])

    @torch.inference_mode()
    def predict_features(self, feats: np.ndarray) -> dict[str, np.ndarray]:
        x = torch.from_numpy(np.asarray(feats, dtype=np.float32)).to(self.device)
        if self.tower is None:
            net: Any = self.net
            z = (x - net.mean) / net.std
            emb = net.backbone(z.unsqueeze(1))
            logits, coral = net.heads(emb)
        else:
            emb = x
            logits, coral = self.net(x)
        above, pred_bin, expected = coral_outputs(coral.float().cpu().numpy())
        return {
            "probs": torch.softmax(logits.float(), dim=1).cpu().numpy(),
            "above": above,
            "bin": pred_bin,
            "expected_bin": expected,
            "embedding": emb.float().cpu().numpy(),
        }

    def predict(self, windows: np.ndarray) -> dict[str, np.ndarray]:
        if not len(windows):
            n_cls, n_bins = len(self.card["classes"]), len(self.card["audio"]["distance_edges_km"])
            z = np.zeros((0, n_bins - 1))
            return {
                "probs": np.zeros((0, n_cls)),
                "above": z,
                "bin": np.zeros(0, int),
                "expected_bin": np.zeros(0),
                "embedding": z,
            }
        return self.predict_features(self.features(windows))


def import_given(
    spec: dict[str, Any],
    backend: str,
    weights_out: str | Path,
    card_out: str | Path,
    mlflow_cfg: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A sound model trained elsewhere (model.source path | package | mlflow) into the workflow
    through `artifacts.import_model`: its card must be a sound model's of the configured
    `sound.backend`; a clap model brings its audio tower (clap/), checked against the card."""

    def describe(weights: Path, card: dict[str, Any] | None) -> dict[str, Any]:
        if card is None:
            raise artifacts.ModelCardError(f"{weights}: a sound model needs its model_card.json beside it")
        if card.get("task") != "sound" or card.get("backend") != backend:
            raise artifacts.ModelCardError(
                f"{weights}: model card task {card.get('task')!r}, backend {card.get('backend')!r}; "
                f"this use case needs task 'sound', backend {backend!r} (sound.backend)"
            )
        return card

    folders = (CLAP_FOLDER,) if backend == "clap" else ()
    card = artifacts.import_model(spec, weights_out, card_out, mlflow_cfg, describe, folders)
    if backend == "clap":
        from aquaflow.backends.sound.clap import tower_id

        found = tower_id(Path(weights_out).parent / CLAP_FOLDER)
        if found != card["audio"].get("clap_id"):
            raise artifacts.ModelCardError(
                f"{card_out}: the CLAP tower's id {found[:16]} differs from the card's audio.clap_id"
            )
    return card
