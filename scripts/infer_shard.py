"""Step: predict one shard of the input table (see aquaflow.engine.infer.run_shard)."""

from aquaflow import runlog
from aquaflow.data import limits
from aquaflow.engine import infer

stream = runlog.setup(snakemake.log[0])
limits.configure(snakemake.params.inference.get("limits"))  # the use case's, else the defaults
infer.run_shard_step(
    inputs_path=snakemake.input.inputs,
    weights=snakemake.input.weights,
    card=snakemake.input.card,
    scatteritem=snakemake.wildcards.scatteritem,
    out=dict(snakemake.output.items()),
    params=snakemake.params.inference,
    threads=snakemake.threads,
    log_stream=stream,
    safe_mode=snakemake.params.inference.get("safe_mode", True),
)
