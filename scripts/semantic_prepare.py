"""Step: pair each raster with its labels and split by raster (see aquaflow.engine.semantic.prepare)."""

from aquaflow import runlog
from aquaflow.engine import semantic

runlog.setup(snakemake.log[0])
semantic.prepare(
    snakemake.input.raw,
    snakemake.params.settings["data"],
    snakemake.params.settings["classes"],
    snakemake.output.manifest,
    snakemake.output.labels,
)
