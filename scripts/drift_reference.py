"""Step: the drift reference stored with the model (see aquaflow.engine.reference.reference_step)."""

from pathlib import Path

from aquaflow import runlog
from aquaflow.data import limits
from aquaflow.engine import reference

stream = runlog.setup(snakemake.log[0])
settings = snakemake.params.settings
limits.configure(settings.get("limits"))  # the use case's, else the defaults
reference.reference_step(
    manifest_path=snakemake.input.manifest,
    images_root=Path(snakemake.input.raw) / settings["images"],
    weights=snakemake.input.weights,
    card=snakemake.input.card,
    out=dict(snakemake.output.items()),
    cfg=settings,
    device=settings["device"],
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
    log_stream=stream,
)
