"""Step: fetch a use case's raw data (see aquaflow.data.fetch)."""

from aquaflow import runlog
from aquaflow.data import limits
from aquaflow.data.fetch import fetch

runlog.setup(snakemake.log[0])
limits.configure(snakemake.params.source.get("limits"))  # the use case's, else the defaults
fetch(snakemake.params.source, snakemake.output[0], snakemake.params.cache)
