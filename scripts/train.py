"""Step: train the classifier (see aquaflow.backends.torch_train.run)."""

from aquaflow import runlog
from aquaflow.backends import torch_train as train
from aquaflow.data import limits

stream = runlog.setup(snakemake.log[0])
limits.configure(snakemake.params.settings.get("limits"))  # the use case's, else the defaults
train.run(
    name=snakemake.wildcards.uc,
    settings=snakemake.params.settings,
    raw=snakemake.input.raw,
    manifest_path=snakemake.input.manifest,
    classes_path=snakemake.input.classes,
    pretrained_file=snakemake.input.get("pretrained") or None,
    cache_path=snakemake.input.get("cache") or None,
    out=dict(snakemake.output.items()),
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
    log_stream=stream,
    processes=snakemake.resources.get("gpu", 1),  # training.distributed: one rank per GPU
    launcher=snakemake.resources.get("mpi"),  # or one rank per Slurm task, started by it (srun)
    log_path=snakemake.log[0],
)
