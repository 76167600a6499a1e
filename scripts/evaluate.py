"""Step: evaluate the model on the held-out split (see aquaflow.engine.evaluate.run)."""

from aquaflow import runlog
from aquaflow.data import limits
from aquaflow.engine import evaluate

stream = runlog.setup(snakemake.log[0])
limits.configure(snakemake.params.settings.get("limits"))  # the use case's, else the defaults
evaluate.run(
    settings=snakemake.params.settings,
    raw=snakemake.input.raw,
    manifest_path=snakemake.input.manifest,
    weights=snakemake.input.weights,
    card_path=snakemake.input.card,
    out=dict(snakemake.output.items()),
    mlflow_cfg=snakemake.params.mlflow,
    threads=snakemake.threads,
    log_stream=stream,
)
