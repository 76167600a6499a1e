"""Augmentation: every named transform builds, keeps uint8 CHW, and offline output is seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aquaflow.data import augment


def test_every_name_builds_and_keeps_shape():
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    for name in augment.AUGMENTATIONS:
        y = augment.build([name], 32)(x)
        assert y.shape == x.shape and y.dtype == torch.uint8, name
    assert augment.build([], 32) is None
    with pytest.raises(ValueError, match="unknown augmentation"):
        augment.build(["sharpen"], 32)


def test_materialise_is_seeded_and_keeps_source_index():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 30, 3), dtype=np.uint8) for _ in range(3)]
    names = ["hflip", "rot90", "brightness_contrast", "noise"]
    a = augment.materialise(images, names, size=32, copies=4, seed=7)
    b = augment.materialise(images, names, size=32, copies=4, seed=7)
    c = augment.materialise(images, names, size=32, copies=4, seed=8)
    assert [i for i, _ in a] == [0] * 4 + [1] * 4 + [2] * 4
    assert all(img.shape == (32, 32, 3) and img.dtype == np.uint8 for _, img in a)
    assert all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, c, strict=True))
    # copies of one image differ from each other (the transforms are random)
    assert len({img.tobytes() for _, img in a[:4]}) > 1


def test_materialise_manifest_augments_the_training_split_only(tmp_path):
    from aquaflow.data import imaging
    from aquaflow.data.dataset import build_manifest

    rng = np.random.default_rng(1)
    for label in ("a", "b"):
        (tmp_path / "src" / label).mkdir(parents=True)
        for k in range(10):
            img = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
            (tmp_path / "src" / label / f"{k}.png").write_bytes(imaging.encode(img))
    dataset = {
        "layout": "class_folders",
        "images": ".",
        "extensions": [".png"],
        "split": {"seed": 0, "val": 0.2, "test": 0.2},
    }
    manifest, _, _ = build_manifest(tmp_path / "src", dataset)
    n_train = int((manifest["split"] == "train").sum())
    table = augment.materialise_manifest(
        manifest, tmp_path / "src", tmp_path / "aug", ["hflip", "noise"], 16, copies=3
    )
    assert len(table) == 3 * n_train
    assert set(table["source_id"]) == set(manifest.loc[manifest["split"] == "train", "id"])
    # the output is a class-folder dataset again
    again, rejected, classes = build_manifest(tmp_path / "aug", dataset)
    assert classes == ["a", "b"] and len(again) + len(rejected) == len(table)
