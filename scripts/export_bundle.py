"""Step: zip the EcoTaxa TSV with every image, ready for EcoTaxa's import (see aquaflow.standards.ecotaxa)."""

import pandas as pd

from aquaflow import runlog
from aquaflow.engine import staging
from aquaflow.standards import ecotaxa

runlog.setup(snakemake.log[0])
# without a shared file system the images come from the campaign's staged shard bundles
read = staging.BundleReader(snakemake.input.staged).read_bytes if snakemake.input.staged else None
ecotaxa.write_bundle(
    pd.read_parquet(snakemake.input.predictions), snakemake.input.tsv, snakemake.output[0], read
)
