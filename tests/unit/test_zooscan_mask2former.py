"""The model-based Multiple Separator's plumbing: a tiny random `transformers` Mask2Former that the
test builds and saves to disk (never a hub download) gives instance masks on a vignette, which
become parts and separation lines. What a random model finds is noise: the test checks the forms
(vignette-sized masks, the score threshold, a partition of the object), not the quality."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from scipy import ndimage

from aquaflow.preprocess import separate as sep


@pytest.fixture(scope="module")
def tiny_mask2former(tmp_path_factory):
    import torch
    from transformers import (
        Mask2FormerConfig,
        Mask2FormerForUniversalSegmentation,
        Mask2FormerImageProcessor,
        SwinConfig,
    )

    folder = tmp_path_factory.mktemp("mask2former")
    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=16,
        depths=[1, 1, 1, 1],
        num_heads=[1, 1, 1, 1],
        window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )
    cfg = Mask2FormerConfig(
        backbone_config=backbone,
        hidden_dim=32,
        mask_feature_size=32,
        feature_size=32,
        num_queries=8,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        encoder_feedforward_dim=64,
        dim_feedforward=64,
        num_labels=1,
        use_pretrained_backbone=False,
    )
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(cfg).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"height": 128, "width": 128}).save_pretrained(folder)
    return folder


def test_instances_from_a_local_mask2former_become_parts(tiny_mask2former, monkeypatch, tmp_path):
    from aquaflow.backends.mask2former import InstanceSeparator

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub call would fail, not download
    mask = np.zeros((70, 110), bool)
    cv2.circle(mask.view(np.uint8), (35, 35), 18, 1, -1)
    cv2.circle(mask.view(np.uint8), (70, 35), 18, 1, -1)
    vignette = np.where(mask, 90, 255).astype(np.uint8)
    every = InstanceSeparator(tiny_mask2former, threshold=0.0)(vignette)
    assert 1 <= len(every) <= 8  # at most one instance per query
    assert all(m.shape == vignette.shape and m.dtype == bool for m in every)
    assert InstanceSeparator(tiny_mask2former, threshold=0.9)(vignette) == []  # nothing that sure
    labels = sep.split_from_instances(mask, every, min_part_px=30)
    assert labels.max() >= 1 and (labels[mask] > 0).all() and not labels[~mask].any()
    lines = sep.separation_lines(labels)
    assert ndimage.label(mask & ~lines, np.ones((3, 3)))[1] == labels.max()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        InstanceSeparator(tmp_path)


def test_separate_step_with_method_model(tiny_mask2former, tmp_path):
    """separate.method model through the preprocess step: the vignettes scored multiple are cut
    from the model's instances (threshold 0: the random model's every instance), parts carry the
    parent id and the counts table adds up."""
    import pandas as pd

    from aquaflow.backends.mask2former import InstanceSeparator
    from aquaflow.preprocess import pipeline
    from aquaflow.synthetic import zooscan as zs
    from tests.unit.test_preprocess_pipeline import usecase

    zs.write_dataset(tmp_path / "raw", n_scans=1, height=600, width=900, n_single=2, n_pairs=3, seed=3)
    cfg = usecase("zooscan")["preprocess"]
    cfg["separate"] |= {"method": "model", "model": str(tiny_mask2former), "model_threshold": 0.0}
    seen = []
    model = InstanceSeparator(tiny_mask2former, threshold=0.0)

    def separator(vignette):
        seen.append(vignette.shape)
        return model(vignette)

    figs = {"before_after": tmp_path / "ba.png", "examples": tmp_path / "ex.png"}
    pipeline.run(tmp_path / "raw", cfg, tmp_path / "out", figs, separator)
    table = pd.read_csv(tmp_path / "out/separation.tsv", sep="\t").iloc[0]
    items = pd.read_parquet(tmp_path / "out/items.parquet")
    assert table["segmented"] == 5 and table["objects"] == len(items)
    assert len(seen) >= 1  # the model ran on the vignettes scored multiple
    assert len(seen) >= table["separated"]  # only on vignettes scored multiple, once each
    assert table["objects"] == table["segmented"] - table["separated"] + table["parts"]
    parts = items[items["object_parent_id"] != ""]
    assert len(parts) == table["parts"]
