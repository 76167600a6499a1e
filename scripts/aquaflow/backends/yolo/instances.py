"""A given Ultralytics `segment` model as the ZooScan Multiple Separator's instance model.

The model folder is the one the engine imports (model_card.json with `format: ultralytics`, `task:
segment`, and the `.pt` it names: trained by `train_detect`, imported by `import_ultralytics_model`,
or trained on generated vignettes by tests/benchmarks/zooscan_multiples.py). `InstanceSeparator(
vignette)` gives the instance masks (any class) the model finds on one vignette, at the vignette's
own resolution, scored at least `threshold`, best first; `aquaflow.preprocess.separate.
split_from_instances` turns them into parts and separation lines, as for a Mask2Former.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aquaflow.backends.yolo import checkpoint, ultra
from aquaflow.backends.yolo.predict import Detector
from aquaflow.models import artifacts
from aquaflow.models.artifacts import ModelCardError

IOU = 0.7  # Ultralytics' default NMS IoU
MAX_INSTANCES = 100


class InstanceSeparator:
    """Instance masks of one vignette from an Ultralytics segment model folder (card + weights)."""

    def __init__(self, folder: str | Path, threshold: float = 0.9, threads: int = 1, device: str = "auto"):
        import torch

        weights, card = artifacts.locate(folder)
        if card["format"] != "ultralytics" or card["task"] != "segment":
            raise ModelCardError(
                f"{folder}: a separator model must be an Ultralytics segment model, this one is "
                f"{card['format']} / {card['task']}"
            )
        checkpoint.offline()
        torch.set_num_threads(threads)
        settings = {"imgsz": card["input_size"], "conf": threshold, "iou": IOU, "max_det": MAX_INSTANCES}
        model = ultra.load(weights, "segment")
        self.detector = Detector(model, "segment", settings, ultra.device_arg(device))

    def __call__(self, vignette: np.ndarray) -> list[np.ndarray]:
        """Boolean masks (vignette-sized) of the instances scored >= threshold, best first."""
        rgb = np.repeat(vignette[:, :, None], 3, 2) if vignette.ndim == 2 else vignette
        if rgb.dtype != np.uint8:  # 16-bit scans: the model sees 8 bits, as it was trained
            rgb = (rgb / max(1, np.iinfo(rgb.dtype).max) * 255).astype(np.uint8)
        det = self.detector.predict([np.ascontiguousarray(rgb)])[0]
        masks = det.masks or []
        return [masks[i] for i in np.argsort(-det.score, kind="stable") if masks[i].any()]
