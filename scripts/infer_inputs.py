"""Step: list every item a campaign predicts (see aquaflow.inputs)."""

from pathlib import Path

from aquaflow import inputs, runlog
from aquaflow.io import write_parquet

runlog.setup(snakemake.log[0])
raw = snakemake.input.raw or None
images = Path(raw, snakemake.params.images) if raw else None
write_parquet(inputs.build(snakemake.params.inputs, images, raw), snakemake.output[0])
