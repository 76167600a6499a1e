"""Backend `smp`: semantic segmentation models of segmentation-models-pytorch (U-Net, DeepLabV3+,
... with timm encoders, `tu-<timm name>`), weights in safetensors, loaded without pickle.

The predictor takes standardised band batches (N x C x H x W float32, as
`aquaflow.data.rasters.read_window(norm=card["normalization"])` reads them) and returns class
probabilities (N x K x H x W float32).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aquaflow.io import read_json

DEFAULT_ENCODER = "tu-mobilenetv3_small_050"


def build(model_cfg: dict[str, Any], in_channels: int, n_classes: int) -> torch.nn.Module:
    """A randomly initialised smp model from the card's / config's `arch`, `encoder`,
    `decoder_channels` (U-Net only) and `encoder_depth`."""
    import segmentation_models_pytorch as smp

    extra: dict[str, Any] = {}
    if model_cfg.get("decoder_channels") and model_cfg["arch"].lower() in ("unet", "unetplusplus"):
        extra["decoder_channels"] = tuple(model_cfg["decoder_channels"])
    return smp.create_model(
        model_cfg["arch"],
        encoder_name=model_cfg.get("encoder", DEFAULT_ENCODER),
        encoder_depth=model_cfg.get("encoder_depth", 5),
        encoder_weights=None,
        in_channels=in_channels,
        classes=n_classes,
        **extra,
    )


def library_versions() -> dict[str, str]:
    import platform

    import segmentation_models_pytorch as smp
    import timm

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "segmentation_models_pytorch": smp.__version__,
        "numpy": np.__version__,
    }


def load(weights: str | Path, card: dict[str, Any]) -> torch.nn.Module:
    """The model of a card with its weights (safetensors, strict), in eval mode on the CPU."""
    from safetensors.torch import load_file

    model = build(card["model"], len(card["bands"]), len(card["classes"]))
    model.load_state_dict(load_file(str(weights)), strict=True)
    return model.eval()


@dataclass
class SemanticPredictor:
    """`predictor(batch)` -> softmax class probabilities, for tiling.predict_blocks."""

    net: torch.nn.Module
    card: dict[str, Any]
    device: torch.device

    @classmethod
    def load(
        cls, weights: str | Path, card: str | Path | dict[str, Any], device: str = "auto", threads: int = 1
    ) -> SemanticPredictor:
        card = card if isinstance(card, dict) else read_json(card)
        torch.set_num_threads(max(1, threads))
        dev = torch.device(
            "cuda"
            if device == "auto" and torch.cuda.is_available()
            else "cpu"
            if device == "auto"
            else device
        )
        return cls(load(weights, card).to(dev), card, dev)

    @torch.inference_mode()
    def __call__(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(self.device)
        return torch.softmax(self.net(x), dim=1).float().cpu().numpy()
