"""Step: counts per class per campaign, as a table and a plot (see aquaflow.engine.campaigns)."""

from aquaflow import runlog
from aquaflow.engine import campaigns

runlog.setup(snakemake.log[0])
campaigns.summarise(
    dict(zip(snakemake.params.campaigns, snakemake.input, strict=True)),
    snakemake.output.table,
    snakemake.output.plot,
)
