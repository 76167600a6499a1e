"""What `snakemake cv` must give for any classification backend (shared by the backends' tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


def check_cv(res: Path, k: int, weights: str, arch: str) -> None:
    """res: results/<uc> after `snakemake cv`. Every labelled image is predicted once by the fold
    model that held it out (a model of the backend's own format and the recipe's architecture),
    pooled figures cover them all, and the shipped model is scored on every labelled image."""
    manifest = pd.read_parquet(res / "prepared/manifest.parquet")
    oof = pd.read_parquet(res / "cv/predictions.parquet")
    assert sorted(oof["id"]) == sorted(manifest["id"]) and oof["id"].is_unique
    for f in range(k):
        fold = pd.read_parquet(res / f"cv/fold{f}/manifest.parquet")
        assert set(fold.loc[fold["split"] == "test", "id"]) == set(oof.loc[oof["fold"] == f, "id"])
        card = json.loads((res / f"cv/fold{f}/model/model_card.json").read_text())
        assert (res / f"cv/fold{f}/model" / weights).is_file() and card["weights"] == weights
        assert card["arch"] == arch
        assert (
            card["training"]["manifest_sha256"]
            != json.loads((res / "model/model_card.json").read_text())["training"]["manifest_sha256"]
        )  # trained on the fold's split, not the shipped one
    probs = oof.filter(like="p_")
    assert probs.sum(axis=1).round(4).eq(1).all()
    m = json.loads((res / "cv/metrics.json").read_text())
    assert m["k"] == k and m["pooled"]["n"] == len(manifest) == sum(f["n"] for f in m["folds"])
    top1 = probs.columns.str[2:][probs.to_numpy().argmax(1)]
    assert abs(m["pooled"]["accuracy"] - float((top1 == oof["label"]).mean())) < 1e-9
    assert m["shipped_model"]["n"] == len(manifest)
