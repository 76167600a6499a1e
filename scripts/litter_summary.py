"""Step: litter counts and covered area per image, one overlay PNG each (aquaflow.tasks.classify.litter)."""

from aquaflow import runlog
from aquaflow.tasks.classify import litter

runlog.setup(snakemake.log[0])
litter.run(
    predictions=snakemake.input.predictions,
    card=snakemake.input.card,
    raw=snakemake.input.raw,
    cfg=snakemake.params.litter,
    table=snakemake.output.table,
    overlays=snakemake.output.overlays,
)
