"""A given `transformers` Mask2Former (instance / panoptic) as the ZooScan Multiple Separator's model.

Loaded from a local folder only (`from_pretrained(folder, local_files_only=True)`: the model's
config + weights and its image processor's config, as `save_pretrained` writes them), never from a
hub. `InstanceSeparator(vignette)` gives the instance masks the model finds on one vignette at the
vignette's size, keeping instances scored at least `threshold` (0.9, as the published module);
`aquaflow.preprocess.separate.split_from_instances` turns them into parts and separation lines.
The image processor's saved `size` sets the resolution the model sees (the module: 512 px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class InstanceSeparator:
    """Instance masks of one grey vignette from a Mask2Former saved in a local folder."""

    def __init__(self, folder: str | Path, threshold: float = 0.9, threads: int = 1):
        import torch
        from transformers import Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: no config.json (a Mask2Former folder from save_pretrained)")
        torch.set_num_threads(threads)
        self._torch = torch
        self.model = Mask2FormerForUniversalSegmentation.from_pretrained(folder, local_files_only=True).eval()
        self.processor = Mask2FormerImageProcessor.from_pretrained(folder, local_files_only=True)
        self.threshold = threshold

    def __call__(self, vignette: np.ndarray) -> list[np.ndarray]:
        """Boolean masks (vignette-sized) of the instances scored >= threshold, best first."""
        rgb = np.repeat(vignette[:, :, None], 3, 2) if vignette.ndim == 2 else vignette
        inputs = self.processor(images=[rgb], return_tensors="pt")
        with self._torch.no_grad():
            outputs = self.model(**inputs)
        result = self.processor.post_process_instance_segmentation(
            outputs, threshold=self.threshold, target_sizes=[vignette.shape[:2]], return_binary_maps=True
        )[0]
        if result["segmentation"] is None or not result["segments_info"]:
            return []
        maps = result["segmentation"].numpy().astype(bool)
        order = sorted(
            range(len(result["segments_info"])), key=lambda i: -result["segments_info"][i]["score"]
        )
        return [maps[i] for i in order if maps[i].any()]
