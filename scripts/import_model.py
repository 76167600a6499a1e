"""Step: bring a model trained elsewhere into the workflow (see aquaflow.models.artifacts.import_model)."""

from aquaflow import runlog
from aquaflow.models import artifacts

runlog.setup(snakemake.log[0])
artifacts.import_model(
    snakemake.params.source,
    snakemake.output.weights,
    snakemake.output.card,
    snakemake.params.mlflow,
)
