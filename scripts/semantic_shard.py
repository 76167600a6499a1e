"""Step: predict one shard of a campaign's rasters (see aquaflow.engine.semantic.run_shard)."""

from aquaflow import runlog
from aquaflow.engine import semantic

runlog.setup(snakemake.log[0])
semantic.run_shard(
    inputs_path=snakemake.input.inputs,
    weights=snakemake.input.weights,
    card_path=snakemake.input.card,
    scatteritem=snakemake.wildcards.scatteritem,
    settings=snakemake.params.settings,
    out_dir=snakemake.output.rasters,
    out_summary=snakemake.output.summary,
    threads=snakemake.threads,
)
