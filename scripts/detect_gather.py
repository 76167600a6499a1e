"""Step: merge a campaign's detection shards; COCO results, counts, overlays (see aquaflow.engine.detect)."""

from aquaflow import runlog
from aquaflow.engine import detect as engine

runlog.setup(snakemake.log[0])
engine.gather(
    predictions=list(snakemake.input.predictions),
    counts=list(snakemake.input.counts),
    rejected=list(snakemake.input.rejected),
    summaries=list(snakemake.input.summaries),
    inputs=snakemake.input.inputs,
    staged=list(snakemake.input.staged),
    card_path=snakemake.input.card,
    out=dict(snakemake.output.items()),
    overlays=snakemake.params.overlays,
)
