"""Step: train one fold of the cross-validation and predict its held-out images (aquaflow.engine.cv)."""

from aquaflow import runlog
from aquaflow.engine import cv

stream = runlog.setup(snakemake.log[0])
cv.train_fold(
    uc=snakemake.wildcards.uc,
    fold=int(snakemake.wildcards.fold),
    backend=snakemake.params.backend,
    weights_name=snakemake.params.weights,
    settings=snakemake.params.settings,
    eval_settings=snakemake.params.evaluation,
    raw=snakemake.input.raw,
    folds_path=snakemake.input.folds[0],
    classes_path=snakemake.input.classes,
    pretrained_file=snakemake.input.get("pretrained") or None,
    out=dict(snakemake.output.items()),
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
    log_stream=stream,
)
