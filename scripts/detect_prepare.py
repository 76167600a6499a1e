"""Step: validate labelled detection data, lay it out for Ultralytics (see aquaflow.tasks.detect.formats)."""

from aquaflow import runlog
from aquaflow.tasks.detect import formats

runlog.setup(snakemake.log[0])
params = snakemake.params
ds = formats.read_dataset(snakemake.input.raw, params.data, params.task, params.allow_outside_root)
formats.materialise(ds, snakemake.output.data, snakemake.params.task)
