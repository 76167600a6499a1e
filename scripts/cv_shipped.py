"""Step: the shipped model's predictions on every labelled image (aquaflow.engine.cv)."""

from aquaflow import runlog
from aquaflow.engine import cv

stream = runlog.setup(snakemake.log[0])
cv.shipped_predictions(
    weights=snakemake.input.weights,
    card_path=snakemake.input.card,
    manifest_path=snakemake.input.manifest,
    raw=snakemake.input.raw,
    eval_settings=snakemake.params.evaluation,
    out=snakemake.output[0],
    threads=snakemake.threads,
    log_stream=stream,
)
