"""Step: run the use case's ordered preprocessing steps (see aquaflow.preprocess.pipeline)."""

import logging

from aquaflow import runlog
from aquaflow.preprocess import pipeline

runlog.setup(snakemake.log[0])
steps = pipeline.run(
    snakemake.input.raw,
    snakemake.params.preprocess,
    snakemake.output.folder,
    {"before_after": snakemake.output.before_after, "examples": snakemake.output.examples},
)
logging.getLogger("preprocess").info("steps:\n%s", steps.to_string(index=False))
