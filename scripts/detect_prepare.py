"""Step: validate labelled detection data, lay it out for Ultralytics (see aquaflow.tasks.detect.formats)."""

from aquaflow import runlog
from aquaflow.data import limits
from aquaflow.tasks.detect import formats

runlog.setup(snakemake.log[0])
params = snakemake.params
limits.configure(params.data.get("limits"))  # the use case's, else the defaults
allow_outside_root = params.data.get("allow_paths_outside_root", False)
ds = formats.read_dataset(snakemake.input.raw, params.data, params.task, allow_outside_root)
formats.materialise(ds, snakemake.output.data, snakemake.params.task)
