"""Step: bring a given Keras model into the workflow (see aquaflow.backends.keras_model.import_model)."""

from aquaflow import runlog
from aquaflow.backends import keras_model as keras_backend

runlog.setup(snakemake.log[0])
keras_backend.import_model(
    snakemake.params.source,
    snakemake.output.weights,
    snakemake.output.card,
    snakemake.params.mlflow,
)
