"""Step: list every item a campaign predicts (see aquaflow.inputs)."""

from pathlib import Path

from aquaflow import inputs, runlog

runlog.setup(snakemake.log[0])
raw = snakemake.input.raw or None
images = Path(raw, snakemake.params.images) if raw else None
table = inputs.build(snakemake.params.inputs, images, raw)
inputs.write(table, snakemake.output[0])  # what the listings skipped goes into the file's metadata
