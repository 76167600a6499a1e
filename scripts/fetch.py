"""Step: fetch a use case's raw data (see aquaflow.data.fetch)."""

from aquaflow import runlog
from aquaflow.data.fetch import fetch

runlog.setup(snakemake.log[0])
fetch(snakemake.params.source, snakemake.output[0], snakemake.params.cache)
