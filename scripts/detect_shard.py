"""Step: detect objects in one shard of a campaign (see aquaflow.engine.detect)."""

from aquaflow import runlog
from aquaflow.engine import detect as engine

stream = runlog.setup(snakemake.log[0])
engine.run_shard_step(
    inputs_path=snakemake.input.inputs,
    weights=snakemake.input.weights,
    card_path=snakemake.input.card,
    scatteritem=snakemake.wildcards.scatteritem,
    out=dict(snakemake.output.items()),
    settings=snakemake.params.settings,
    ultralytics_dir=snakemake.params.ultralytics,
    log_stream=stream,
)
