"""Step: train a sound model (see aquaflow.backends.sound.train.run)."""

from aquaflow import runlog
from aquaflow.backends.sound import train

runlog.setup(snakemake.log[0])
train.run(
    name=snakemake.wildcards.uc,
    settings=snakemake.params.settings,
    data_folder=snakemake.input.raw,
    out=dict(snakemake.output.items()),
    work=snakemake.params.work,
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
)
