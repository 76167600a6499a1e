"""Step: the drift reference of a sound model (see aquaflow.engine.sound.reference_step)."""

from aquaflow import runlog
from aquaflow.engine import sound

stream = runlog.setup(snakemake.log[0])
sound.reference_step(
    data=snakemake.input.raw,
    weights=snakemake.input.weights,
    card_path=snakemake.input.card,
    out=dict(snakemake.output.items()),
    cfg={**snakemake.params.settings, "threads": snakemake.threads},
    mlflow_cfg=snakemake.params.mlflow,
    log_stream=stream,
)
