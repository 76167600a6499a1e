"""Step: list a campaign's rasters (see aquaflow.engine.semantic.campaign_inputs)."""

from aquaflow import runlog
from aquaflow.engine import semantic

runlog.setup(snakemake.log[0])
semantic.campaign_inputs(
    snakemake.params.inputs,
    snakemake.input.raw or None,
    snakemake.params.data,
    snakemake.output[0],
)
