"""Step: list every item to predict (see aquaflow.inputs)."""

from aquaflow import inputs, runlog
from aquaflow.dataset import manifest_images_root

runlog.setup(snakemake.log[0])
uc = snakemake.params.usecase
images = manifest_images_root(snakemake.input.raw, uc["dataset"])
root = snakemake.input.raw if uc["preprocess"]["steps"] else None
table = inputs.build(uc["inference"]["inputs"], images, root)
inputs.write(table, snakemake.output[0])  # what the listings skipped goes into the file's metadata
