"""Step: train the semantic model into model.safetensors + model_card.json + its MLflow run
(see aquaflow.backends.smp_train.run)."""

from aquaflow import runlog
from aquaflow.backends import smp_train

runlog.setup(snakemake.log[0])
smp_train.run(
    name=snakemake.wildcards.uc,
    manifest_path=snakemake.input.manifest,
    settings=snakemake.params.settings,
    out=dict(snakemake.output.items()),
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
)
