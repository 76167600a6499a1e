"""Just-in-time augmentation from a YAML list, built on torchvision.transforms.v2.

torchvision v2 is already a dependency (no extra package), works on uint8 tensors in DataLoader
workers, and is seeded by torch's generator, so CPU training stays deterministic.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

AUGMENTATIONS = ("hflip", "vflip", "rot90", "scale_crop", "brightness_contrast", "blur", "noise")


class RandomRot90(torch.nn.Module):
    """Rotate by a random multiple of 90 degrees (exact, no interpolation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = int(torch.randint(0, 4, (1,)))
        return torch.rot90(x, k, dims=(-2, -1))


class GaussianNoise(torch.nn.Module):
    def __init__(self, sigma: float = 4.0):
        super().__init__()
        self.sigma = sigma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noisy = x.float() + torch.randn(x.shape) * self.sigma
        return noisy.clamp(0, 255).to(torch.uint8)


def build(names: list[str], size: int) -> v2.Compose | None:
    """Compose the named augmentations for uint8 CHW tensors of side `size` (None if no names)."""
    if not names:
        return None
    steps: list[torch.nn.Module] = []
    for name in names:
        if name == "hflip":
            steps.append(v2.RandomHorizontalFlip())
        elif name == "vflip":
            steps.append(v2.RandomVerticalFlip())
        elif name == "rot90":
            steps.append(RandomRot90())
        elif name == "scale_crop":
            steps.append(v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.18), antialias=True))
        elif name == "brightness_contrast":
            steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2))
        elif name == "blur":
            steps.append(v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.3))
        elif name == "noise":
            steps.append(v2.RandomApply([GaussianNoise()], p=0.3))
        else:
            raise ValueError(f"unknown augmentation {name!r}; allowed: {', '.join(AUGMENTATIONS)}")
    return v2.Compose(steps)
