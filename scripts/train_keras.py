"""Step: fine-tune a Keras application backbone (see aquaflow.backends.keras_train.run)."""

from aquaflow import runlog
from aquaflow.backends import keras_train

runlog.setup(snakemake.log[0])
keras_train.run(
    name=snakemake.wildcards.uc,
    settings=snakemake.params.settings,
    raw=snakemake.input.raw,
    manifest_path=snakemake.input.manifest,
    classes_path=snakemake.input.classes,
    out=dict(snakemake.output.items()),
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
)
