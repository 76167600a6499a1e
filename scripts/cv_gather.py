"""Step: pooled out-of-fold figures of the cross-validation (aquaflow.engine.cv.gather)."""

from aquaflow import runlog
from aquaflow.engine import cv

runlog.setup(snakemake.log[0])
cv.gather(
    uc=snakemake.wildcards.uc,
    predictions=list(snakemake.input.predictions),
    classes_path=snakemake.input.classes,
    interval=snakemake.params.intervals,
    out=dict(snakemake.output.items()),
    mlflow_cfg=snakemake.params.mlflow,
    shipped=snakemake.input.shipped[0],
)
