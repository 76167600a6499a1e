"""Step: gather a sound campaign's shards; per-file and per-hour tables (aquaflow.engine.sound)."""

from aquaflow import runlog
from aquaflow.engine import sound

runlog.setup(snakemake.log[0])
sound.gather(
    predictions=snakemake.input.predictions,
    rejected=snakemake.input.rejected,
    summaries=snakemake.input.summaries,
    inputs=snakemake.input.inputs,
    out=dict(snakemake.output.items()),
    absent=snakemake.params.absent,
    classes=snakemake.params.classes,
    spectrograms=snakemake.params.spectrograms,
)
