"""Step: bring a sound model trained elsewhere into the workflow (see
aquaflow.backends.sound.model.import_given)."""

from aquaflow import runlog
from aquaflow.backends.sound import model

runlog.setup(snakemake.log[0])
model.import_given(
    snakemake.params.source,
    snakemake.params.backend,
    snakemake.output.weights,
    snakemake.output.card,
    snakemake.params.mlflow,
)
