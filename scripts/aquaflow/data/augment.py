"""Augmentation from a YAML list, built on torchvision.transforms.v2: just in time or offline.

Why torchvision v2 rather than albumentations: it is already a dependency (no extra package and
no extra pin to keep in envs/), it works directly on the uint8 CHW tensors our DataLoaders yield
(no numpy/HWC round trip per sample), and it draws from torch's generator, so a seed makes CPU
training and offline materialisation reproducible. What albumentations adds (many photometric
and geometric transforms, bbox/mask targets) is not needed by a classifier of crops and tiles.

- `build(names, size)`: the transform used inside training (`training.augmentation`);
- `materialise(images, names, size, copies, seed)`: the same transforms applied offline;
  `materialise_manifest` / `python -m aquaflow.data.augment` write an augmented copy of a training
  split in class folders (e.g. to share it, or to train elsewhere).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
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


def materialise(
    images: list[np.ndarray],
    names: list[str],
    size: int,
    copies: int,
    seed: int = 0,
) -> list[tuple[int, np.ndarray]]:
    """Offline augmentation: `copies` augmented versions of each HxWx3 uint8 image, seeded.

    The same transforms as training (`build`); images are letterboxed to `size` first. Returns
    (index of the source image, augmented HxWx3 uint8) pairs, so callers can keep labels and
    splits with their source (augment the training split only, never val/test).
    """
    from aquaflow.data import imaging

    transform = build(names, size)
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    out = []
    try:
        for i, img in enumerate(images):
            x = torch.from_numpy(imaging.letterbox(img, size)).permute(2, 0, 1).contiguous()
            for _ in range(copies):
                y = transform(x) if transform is not None else x
                out.append((i, y.permute(1, 2, 0).contiguous().numpy()))
    finally:
        torch.random.set_rng_state(gen_state)
    return out


def materialise_manifest(
    manifest: pd.DataFrame,
    images_root: str | Path,
    out: str | Path,
    names: list[str],
    size: int,
    copies: int,
    seed: int = 0,
) -> pd.DataFrame:
    """Write `copies` augmented versions of every *training* image as <out>/<label>/<id>_aN.png.

    Val and test images are never augmented (their copies would leak into evaluation). Returns
    a table (path relative to `out`, label, source id) in the class-folder layout that
    dataset.build_manifest reads, so an augmented set can be prepared and trained on elsewhere.
    """
    from aquaflow.data import imaging

    out = Path(out)
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    rows = []
    made: dict[str, int] = {}
    for start in range(0, len(train), 64):  # a chunk at a time: memory stays small
        part = train.iloc[start : start + 64]
        images = [imaging.load(Path(images_root) / p).image for p in part["path"]]
        for i, img in materialise(images, names, size, copies, seed + start):
            rec = part.iloc[i]
            k = made[rec["id"]] = made.get(rec["id"], -1) + 1
            rel = Path(str(rec["label"])) / f"{rec['id']}_a{k}.png"
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(imaging.encode(img))
            rows.append((str(rel), rec["label"], rec["id"]))
    return pd.DataFrame(rows, columns=["path", "label", "source_id"])


def main(argv: list[str] | None = None) -> None:
    """python -m aquaflow.data.augment MANIFEST IMAGES_ROOT OUT --copies N [--names ...] [--size S]"""
    import argparse

    ap = argparse.ArgumentParser(description="Materialise an augmented copy of a training split.")
    ap.add_argument("manifest", help="prepared/manifest.parquet")
    ap.add_argument("images_root", help="folder the manifest paths are relative to")
    ap.add_argument("out")
    ap.add_argument("--copies", type=int, default=4)
    ap.add_argument("--names", nargs="+", default=["hflip", "vflip", "rot90", "brightness_contrast"])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    table = materialise_manifest(
        pd.read_parquet(a.manifest), a.images_root, a.out, a.names, a.size, a.copies, a.seed
    )
    table.to_csv(Path(a.out) / "augmented.csv", index=False)
    print(f"{a.out}: {len(table)} augmented images")


if __name__ == "__main__":
    main()
