"""Step: drift tests of one campaign against the model's reference (see aquaflow.monitoring.drift.run)."""

from aquaflow import runlog
from aquaflow.monitoring import drift

runlog.setup(snakemake.log[0])
drift.run(
    predictions=snakemake.input.predictions,
    reference=snakemake.input.reference,
    out=dict(snakemake.output.items()),
    cfg=snakemake.params.drift,
    title=f"{snakemake.wildcards.uc} / {snakemake.wildcards.campaign}: drift per batch",
)
