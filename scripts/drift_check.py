"""Step: the on_drift policy (see aquaflow.drift.check)."""

from aquaflow import drift, runlog

runlog.setup(snakemake.log[0])
drift.check(snakemake.input[0], snakemake.params.on_drift, snakemake.output[0])
