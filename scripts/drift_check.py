"""Step: the on_drift policy (see aquaflow.monitoring.drift.check)."""

from aquaflow import runlog
from aquaflow.monitoring import drift

runlog.setup(snakemake.log[0])
drift.check(snakemake.input[0], snakemake.params.on_drift, snakemake.output[0])
