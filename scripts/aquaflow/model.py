"""Classifier models: timm backbones, safe weight files (safetensors) and the model card."""

from __future__ import annotations

import logging
import platform
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors.torch import load_file, save_file

from .io import read_json, sha256_file

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build(arch: str, num_classes: int, pretrained_weights: str | None = None) -> torch.nn.Module:
    """A timm model with a fresh head; never downloads (pretrained weights come from a path)."""
    model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
    if pretrained_weights:
        load_backbone(model, pretrained_weights)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load tensors from .safetensors, or from a torch file with weights_only=True (no pickle)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    return state


def load_backbone(model: torch.nn.Module, path: str | Path) -> None:
    """Load pretrained weights, skipping tensors whose shape differs (e.g. a classifier head)."""
    state = read_state_dict(path)
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(usable))
    if not usable:
        raise ValueError(f"{path}: no tensor matches the architecture")
    model.load_state_dict(usable, strict=False)
    log.info(
        "loaded %d tensors from %s (skipped %d: %s)", len(usable), path, len(skipped), ", ".join(skipped[:6])
    )


def save_weights(model: torch.nn.Module, path: str | Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))


def library_versions() -> dict[str, str]:
    import numpy
    import timm as _timm
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "timm": _timm.__version__,
        "numpy": numpy.__version__,
    }


def model_id(weights: str | Path) -> str:
    """The model's identity: sha256 of its weights file."""
    return sha256_file(weights)


def load(weights: str | Path, card: str | Path | dict[str, Any]) -> tuple[torch.nn.Module, dict]:
    """Rebuild a trained model from its weights and card, in eval mode on the CPU."""
    card = card if isinstance(card, dict) else read_json(card)
    model = timm.create_model(card["arch"], pretrained=False, num_classes=len(card["classes"]))
    model.load_state_dict(read_state_dict(weights), strict=True)
    return model.eval(), card


def pick_device(setting: str = "auto") -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(setting)


class Normalized(torch.nn.Module):
    """Wraps a classifier so it takes uint8 NCHW batches and returns (logits, features)."""

    def __init__(self, model: torch.nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (x.float() - self.mean) / self.std
        feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        return self.model.get_classifier()(feats), feats
