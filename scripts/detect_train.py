"""Step: train a YOLO model offline into model.pt + model_card.json + its MLflow run (see
aquaflow.backends.yolo.train)."""

from aquaflow import runlog
from aquaflow.backends.yolo import train

runlog.setup(snakemake.log[0])
train.run(
    name=snakemake.wildcards.uc,
    data_dir=snakemake.input.data,
    spec=snakemake.params.spec,
    task=snakemake.params.task,
    out=dict(snakemake.output.items()),
    work=snakemake.params.work,
    ultralytics_dir=snakemake.params.ultralytics,
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
)
