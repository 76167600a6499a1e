"""Step: a fold for every labelled image (see aquaflow.engine.cv.assign_folds)."""

import pandas as pd

from aquaflow import runlog
from aquaflow.engine import cv
from aquaflow.io import write_parquet

runlog.setup(snakemake.log[0])
spec = snakemake.params.cv
folds = cv.assign_folds(pd.read_parquet(snakemake.input.manifest), spec["folds"], spec["seed"], spec["group"])
write_parquet(folds, snakemake.output[0])
