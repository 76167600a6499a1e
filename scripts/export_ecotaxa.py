"""Step: write a campaign's EcoTaxa import TSV (see aquaflow.standards.ecotaxa)."""

from aquaflow import runlog
from aquaflow.standards import ecotaxa

runlog.setup(snakemake.log[0])
ecotaxa.export(
    snakemake.input.predictions,
    snakemake.output.tsv,
    snakemake.params.ecotaxa,
    samples=snakemake.input.get("samples"),
)
