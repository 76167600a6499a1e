"""Step: score the semantic model on the held-out rasters (see aquaflow.engine.semantic.evaluate)."""

from aquaflow import runlog
from aquaflow.engine import semantic

runlog.setup(snakemake.log[0])
semantic.evaluate(
    manifest_path=snakemake.input.manifest,
    weights=snakemake.input.weights,
    card_path=snakemake.input.card,
    settings=snakemake.params.settings,
    out=dict(snakemake.output.items()),
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
)
