"""Step: validate labelled detection data, lay it out for Ultralytics (see aquaflow.tasks.detect.formats)."""

from aquaflow import runlog
from aquaflow.tasks.detect import formats

runlog.setup(snakemake.log[0])
ds = formats.read_dataset(snakemake.input.raw, snakemake.params.data, snakemake.params.task)
formats.materialise(ds, snakemake.output.data, snakemake.params.task)
