"""Step: zip the EcoTaxa TSV with every image, ready for EcoTaxa's import (see aquaflow.ecotaxa)."""

import pandas as pd

from aquaflow import ecotaxa, runlog

runlog.setup(snakemake.log[0])
ecotaxa.write_bundle(pd.read_parquet(snakemake.input.predictions), snakemake.input.tsv, snakemake.output[0])
