"""Cross-validation folds: stratified, grouped by sample when asked, each fold's splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from aquaflow.engine import cv


def manifest(n_samples: int = 12, per_sample: int = 6) -> pd.DataFrame:
    """Images in sample folders s00..; the label cycles over 3 classes within each sample."""
    rows = [
        {"id": f"{s}-{i}", "path": f"s{s:02d}/img_{i}.png", "label": "abc"[(s + i) % 3], "split": "train"}
        for s in range(n_samples)
        for i in range(per_sample)
    ]
    return pd.DataFrame(rows)


def test_folds_cover_every_image_once_and_are_stratified():
    folds = cv.assign_folds(manifest(), 4, seed=0)
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3] and len(folds) == 72
    counts = folds.groupby(["fold", "label"]).size().unstack()
    assert counts.to_numpy().min() >= 5 and counts.to_numpy().max() <= 7  # 24 per class over 4 folds
    again = cv.assign_folds(manifest(), 4, seed=0)
    assert (again["fold"] == folds["fold"]).all()
    assert not (cv.assign_folds(manifest(), 4, seed=1)["fold"] == folds["fold"]).all()


@pytest.mark.parametrize("group", ["folder", r"^(s\d+)/"])
def test_a_samples_images_never_straddle_folds(group):
    folds = cv.assign_folds(manifest(), 4, seed=0, group=group)
    assert folds.groupby("group")["fold"].nunique().max() == 1
    assert folds["group"].nunique() == 12 and folds["fold"].nunique() == 4
    ungrouped = cv.assign_folds(manifest(), 4, seed=0)
    assert ungrouped.assign(g=folds["group"]).groupby("g")["fold"].nunique().max() > 1  # the contrast


def test_fold_splits_test_val_train():
    folds = cv.assign_folds(manifest(), 4, seed=0)
    for f in range(4):
        m = cv.fold_manifest(folds, f)
        assert list(m.columns) == ["id", "path", "label", "split"]
        assert set(m.loc[folds["fold"] == f, "split"]) == {"test"}
        assert set(m.loc[folds["fold"] == (f + 1) % 4, "split"]) == {"val"}
        assert (m["split"] == "train").sum() == (~folds["fold"].isin([f, (f + 1) % 4])).sum()
    tested = np.concatenate([np.flatnonzero(cv.fold_manifest(folds, f)["split"] == "test") for f in range(4)])
    assert sorted(tested) == list(range(72))  # every image is out-of-fold exactly once


def test_impossible_groupings_are_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"cv\.group"):
        cv.assign_folds(manifest(n_samples=3), 4, group="folder")
    with pytest.raises(ValueError, match=r"cv.group .* matches no group"):
        cv.assign_folds(manifest(), 4, group=r"^(x\d+)/")
    with pytest.raises(ValueError, match=r"cv\.folds"):
        cv.assign_folds(manifest(n_samples=1, per_sample=3), 4)
