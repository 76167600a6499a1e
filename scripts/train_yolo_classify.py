"""Step: train an Ultralytics classifier (see aquaflow.backends.yolo.classify.run)."""

from aquaflow import runlog
from aquaflow.backends.yolo import classify

runlog.setup(snakemake.log[0])
classify.run(
    name=snakemake.wildcards.uc,
    settings=snakemake.params.settings,
    raw=snakemake.input.raw,
    manifest_path=snakemake.input.manifest,
    out=dict(snakemake.output.items()),
    work=snakemake.params.work,
    ultralytics_dir=snakemake.params.ultralytics,
    mlflow_cfg=snakemake.params.mlflow,
    pretrained_file=snakemake.input.get("pretrained") or None,
    threads=snakemake.threads,
)
