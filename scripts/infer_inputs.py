"""Step: list every item to predict (see aquaflow.inputs)."""

from aquaflow import inputs, runlog
from aquaflow.dataset import manifest_images_root
from aquaflow.io import write_parquet

runlog.setup(snakemake.log[0])
uc = snakemake.params.usecase
images = manifest_images_root(snakemake.input.raw, uc["dataset"])
root = snakemake.input.raw if uc["preprocess"]["steps"] else None
write_parquet(inputs.build(uc["inference"]["inputs"], images, root), snakemake.output[0])
