"""Step: bring a model trained elsewhere into the workflow (see aquaflow.artifacts.import_model)."""

from aquaflow import artifacts, runlog

runlog.setup(snakemake.log[0])
artifacts.import_model(
    snakemake.params.source,
    snakemake.output.weights,
    snakemake.output.card,
    snakemake.params.mlflow,
)
