"""Step: write a campaign's EcoTaxa import TSV (see aquaflow.ecotaxa)."""

from aquaflow import ecotaxa, runlog

runlog.setup(snakemake.log[0])
ecotaxa.export(snakemake.input.predictions, snakemake.output.tsv, snakemake.params.ecotaxa)
