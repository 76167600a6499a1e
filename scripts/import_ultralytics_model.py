"""Step: bring a given Ultralytics checkpoint of any task into the workflow, its task checked
(see aquaflow.backends.yolo.checkpoint.import_model)."""

from aquaflow import runlog
from aquaflow.backends.yolo import checkpoint

runlog.setup(snakemake.log[0])
checkpoint.import_model(
    snakemake.params.source,
    snakemake.params.task,
    snakemake.output.weights,
    snakemake.output.card,
    snakemake.params.mlflow,
    snakemake.params.ultralytics,
)
