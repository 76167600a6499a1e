"""Step: train the classifier (see aquaflow.train.run)."""

from aquaflow import runlog, train

stream = runlog.setup(snakemake.log[0])
train.run(
    name=snakemake.wildcards.uc,
    usecase=snakemake.params.usecase,
    raw=snakemake.input.raw,
    manifest_path=snakemake.input.manifest,
    classes_path=snakemake.input.classes,
    weights_path=snakemake.output.weights,
    card_path=snakemake.output.card,
    history_path=snakemake.output.history,
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
    log_stream=stream,
)
