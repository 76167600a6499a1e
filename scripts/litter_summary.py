"""Step: litter counts and covered area per image, and one overlay PNG per image (aquaflow.litter)."""

import json
from pathlib import Path

import pandas as pd

from aquaflow import litter, runlog
from aquaflow.io import write_tsv

runlog.setup(snakemake.log[0])
cfg = snakemake.params.usecase["litter"]
classes = json.loads(Path(snakemake.input.card).read_text())["classes"]
preds = pd.read_parquet(snakemake.input.predictions)
summary = litter.summarise(preds, classes, cfg["categories"], cfg["gsd_cm"])
write_tsv(summary, snakemake.output.table)
raw = Path(snakemake.input.raw)
files = preds.drop_duplicates("image").set_index("image")["image_file"]
litter.write_overlays(
    preds, {k: raw / v for k, v in files.items()}, classes, cfg["categories"], snakemake.output.overlays
)
