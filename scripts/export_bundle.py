"""Step: zip the EcoTaxa TSV with every object's image or crop (aquaflow.standards.ecotaxa)."""

import pandas as pd

from aquaflow import runlog
from aquaflow.engine import staging
from aquaflow.standards import ecotaxa
from aquaflow.tasks.objects import export_objects

runlog.setup(snakemake.log[0])
objects = export_objects(pd.read_parquet(snakemake.input.predictions), snakemake.params.objects)
# without a shared file system the images come from the campaign's staged shard bundles
read = staging.source_reader(objects, snakemake.input.staged)
ecotaxa.write_bundle(objects, snakemake.input.tsv, snakemake.output[0], read, snakemake.params.strip_exif)
