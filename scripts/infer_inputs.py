"""Step: list every item a campaign predicts (see aquaflow.data.inputs)."""

from pathlib import Path

from aquaflow import runlog
from aquaflow.data import inputs, limits

runlog.setup(snakemake.log[0])
raw = snakemake.input.raw or None
images = Path(raw, snakemake.params.images) if raw else None
specs = snakemake.params.inputs
limits.configure(specs[0].get("limits") if specs else None)  # the use case's, else the defaults
allow_outside_root = any(spec.get("allow_paths_outside_root", False) for spec in specs)
table = inputs.build(specs, images, raw, allow_outside_root)
if raw:  # without a shared file system `raw` is a local copy: keep the workflow's own path
    table = inputs.relocate(table, raw, snakemake.params.raw_name)
inputs.write(table, snakemake.output[0])  # what the listings skipped goes into the file's metadata
