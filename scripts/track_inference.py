"""Step: one MLflow run for a campaign's inference (see aquaflow.monitoring.tracking.log_inference)."""

from aquaflow import runlog
from aquaflow.io import read_json
from aquaflow.monitoring import tracking

runlog.setup(snakemake.log[0])
tracking.log_inference(
    usecase=snakemake.wildcards.uc,
    campaign=snakemake.wildcards.campaign,
    card=read_json(snakemake.input.card),
    summary=read_json(snakemake.input.summary),
    drift=read_json(snakemake.input.drift) if snakemake.input.drift else None,
    mlflow_cfg=snakemake.params.mlflow,
    out=snakemake.output[0],
)
