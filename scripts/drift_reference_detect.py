"""Step: a detector's drift reference (see aquaflow.engine.reference.detect_reference_step)."""

from aquaflow import runlog
from aquaflow.engine import reference

stream = runlog.setup(snakemake.log[0])
reference.detect_reference_step(
    data_dir=snakemake.input.data,
    weights=snakemake.input.weights,
    card=snakemake.input.card,
    out=dict(snakemake.output.items()),
    cfg=snakemake.params.drift,
    settings=snakemake.params.settings,
    ultralytics_dir=snakemake.params.ultralytics,
    mlflow_cfg=snakemake.params.mlflow,
    log_stream=stream,
)
