"""What the Darwin Core writer sees of a semantic campaign: one object per raster and class present.

A semantic model gives a class per pixel, not individuals, so what a sample publishes per taxon is its
cover (the class's pixels over the pixels classified in the sample's rasters), never a count. The
rows come in the columns the writer reads for every task: `top1_label` (the class), `top1_prob`
(1.0: the class map keeps no per-object score, so `export.dwca.min_score` has nothing to filter) and
`mask_area_px` (the class's pixels); plus the sample, the raster's id and source, model and run.
"""

from __future__ import annotations

import pandas as pd

from aquaflow.tasks.detect.objects import samples

PIXELS = "pixels_"  # predictions' per-class pixel columns (aquaflow.engine.semantic.gather)
PASSED = ("seq", "id", "source", "model_id", "run_id")


def classes(preds: pd.DataFrame) -> list[str]:
    return [c.removeprefix(PIXELS) for c in preds.columns if c.startswith(PIXELS)]


def objects(
    preds: pd.DataFrame, *, sample_column: str = "sample_id", default_sample: str = ""
) -> pd.DataFrame:
    """A semantic campaign's predictions (one row per raster) -> one object per raster and class
    with at least one pixel, in raster then class order."""
    sample = samples(preds, sample_column, default_sample)
    rows = []
    for i, (_, raster) in enumerate(preds.iterrows()):
        for cls in classes(preds):
            pixels = int(raster[PIXELS + cls])
            if pixels > 0:
                passed = {k: raster[k] for k in PASSED if k in preds}
                rows.append(
                    {
                        sample_column: sample.iloc[i],
                        **passed,
                        "top1_label": cls,
                        "top1_prob": 1.0,
                        "mask_area_px": float(pixels),
                    }
                )
    # the sample column may be one of the passed ones (`id`: each raster its own sample)
    columns = [sample_column, *[k for k in PASSED if k in preds], "top1_label", "top1_prob", "mask_area_px"]
    return pd.DataFrame(rows, columns=list(dict.fromkeys(columns)))


def images(
    preds: pd.DataFrame, *, sample_column: str = "sample_id", default_sample: str = ""
) -> pd.DataFrame:
    """Every predicted raster's sample and classified pixels (nodata excluded): what a taxon's cover
    is measured against."""
    area = preds[[PIXELS + c for c in classes(preds)]].sum(axis=1).astype(float)
    return pd.DataFrame(
        {"sample": samples(preds, sample_column, default_sample).to_numpy(), "area_px": area.to_numpy()}
    )
