"""Step: bring a given Keras model into the workflow (see aquaflow.keras_backend.import_model)."""

from aquaflow import keras_backend, runlog

runlog.setup(snakemake.log[0])
keras_backend.import_model(
    snakemake.params.source,
    snakemake.output.weights,
    snakemake.output.card,
    snakemake.params.mlflow,
)
