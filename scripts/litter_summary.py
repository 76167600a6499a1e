"""Step: litter counts and covered area per image, and one overlay PNG per image (aquaflow.litter)."""

from aquaflow import litter, runlog

runlog.setup(snakemake.log[0])
litter.run(
    predictions=snakemake.input.predictions,
    card=snakemake.input.card,
    raw=snakemake.input.raw,
    cfg=snakemake.params.litter,
    table=snakemake.output.table,
    overlays=snakemake.output.overlays,
)
