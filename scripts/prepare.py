"""Step: build the training manifest (see aquaflow.data.dataset)."""

from aquaflow import runlog
from aquaflow.data import limits
from aquaflow.data.dataset import build_manifest
from aquaflow.io import write_json, write_parquet

runlog.setup(snakemake.log[0])
dataset = snakemake.params.dataset
limits.configure(dataset.get("limits"))  # the use case's, else the defaults
manifest, rejected, classes = build_manifest(
    snakemake.input.raw, dataset, dataset["max_pixels"], dataset.get("allow_paths_outside_root", False)
)
write_parquet(manifest, snakemake.output.manifest)
write_parquet(rejected, snakemake.output.rejected)
write_json({"classes": classes}, snakemake.output.classes)
