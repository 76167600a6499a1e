"""The ZooScan Multiple Classifier as a trained model: P(`multiple`) of a vignette from any
classification backend.

The model folder is one the engine imports (model_card.json with `task: classify` and a class named
`multiple`, plus its weights: timm/ONNX, Keras or Ultralytics, `aquaflow.backends.load_predictor`
dispatches on the card), e.g. the ZooScan use case's own single/multiple classifier trained on the
objects as segmented. `MultipleScorer(vignette)` resizes the vignette as the card says (letterbox,
stretch or centre crop to `input_size`) and returns the model's probability of `multiple`: the
`object_multiple_score` that decides which objects `aquaflow.preprocess.separate` cuts, in place of
the geometric score.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aquaflow.backends import load_predictor
from aquaflow.data import imaging
from aquaflow.models import artifacts
from aquaflow.models.artifacts import ModelCardError


class MultipleScorer:
    """P(`label`) of one grey or RGB vignette from a classification model folder."""

    def __init__(self, folder: str | Path, threads: int = 1, label: str = "multiple", device: str = "auto"):
        weights, card = artifacts.locate(folder)
        if card["task"] != "classify" or label not in card["classes"]:
            raise ModelCardError(
                f"{folder}: a multiple classifier must be a classification model with a class"
                f" {label!r}; this one is task {card['task']} with classes {card['classes']}"
            )
        self.index = card["classes"].index(label)
        self.size = int(card["input_size"])
        self.resize = imaging.RESIZE[card.get("resize", "letterbox")]
        self.predictor = load_predictor(weights, card, device, threads)

    def __call__(self, vignette: np.ndarray) -> float:
        import torch

        rgb = np.repeat(vignette[:, :, None], 3, 2) if vignette.ndim == 2 else vignette
        if rgb.dtype != np.uint8:  # 16-bit scans: the model sees 8 bits
            rgb = (rgb / max(1, np.iinfo(rgb.dtype).max) * 255).astype(np.uint8)
        batch = torch.from_numpy(np.ascontiguousarray(self.resize(rgb, self.size))[None]).permute(0, 3, 1, 2)
        probs, _ = self.predictor(batch)
        return float(probs[0, self.index])
