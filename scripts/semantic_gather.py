"""Step: a semantic campaign's tables and summary from its shards (see aquaflow.engine.semantic.gather)."""

from aquaflow import runlog
from aquaflow.engine import semantic

runlog.setup(snakemake.log[0])
semantic.gather(
    inputs_path=snakemake.input.inputs,
    summaries=list(snakemake.input.summaries),
    shard_dirs=list(snakemake.input.rasters),
    classes=snakemake.params.classes,
    out=dict(snakemake.output.items()),
)
