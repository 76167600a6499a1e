"""Step: gather shard outputs into merged tables, a Parquet dataset and a summary."""

from aquaflow import runlog
from aquaflow.engine import gather

runlog.setup(snakemake.log[0])
gather.run(
    predictions=snakemake.input.predictions,
    rejected=snakemake.input.rejected,
    summaries=snakemake.input.summaries,
    inputs=snakemake.input.inputs,
    out=dict(snakemake.output.items()),
)
