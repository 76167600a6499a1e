"""Step: predict every window of one shard's recordings (see aquaflow.engine.sound)."""

from aquaflow import runlog
from aquaflow.engine import sound

stream = runlog.setup(snakemake.log[0])
sound.run_shard_step(
    inputs_path=snakemake.input.inputs,
    weights=snakemake.input.weights,
    card_path=snakemake.input.card,
    scatteritem=snakemake.wildcards.scatteritem,
    out=dict(snakemake.output.items()),
    settings={**snakemake.params.settings, "threads": snakemake.threads},
    log_stream=stream,
)
