"""Step: a semantic model's drift reference (see aquaflow.engine.reference.semantic_reference_step)."""

from aquaflow import runlog
from aquaflow.engine import reference

runlog.setup(snakemake.log[0])
reference.semantic_reference_step(
    manifest=snakemake.input.manifest,
    weights=snakemake.input.weights,
    card=snakemake.input.card,
    out=dict(snakemake.output.items()),
    cfg=snakemake.params.drift,
    settings=snakemake.params.settings,
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
)
