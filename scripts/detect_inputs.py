"""Step: list every image of a detection campaign (see aquaflow.inputs)."""

from aquaflow import inputs, runlog
from aquaflow.io import write_parquet

runlog.setup(snakemake.log[0])
raw = snakemake.input.raw if snakemake.input.raw else None
write_parquet(inputs.build(snakemake.params.inputs, raw or ".", None), snakemake.output[0])
