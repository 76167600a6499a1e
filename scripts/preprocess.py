"""Step: run the use case's ordered preprocessing steps (see aquaflow.preprocess.pipeline)."""

import logging

from aquaflow import runlog
from aquaflow.data import limits
from aquaflow.preprocess import pipeline

runlog.setup(snakemake.log[0])
limits.configure(snakemake.params.preprocess.get("limits"))  # the use case's, else the defaults
cut = snakemake.params.preprocess.get("separate", {})
separator = None
if "separate" in snakemake.params.preprocess["steps"] and cut.get("method") == "model":
    from aquaflow.backends import load_instance_separator

    separator = load_instance_separator(snakemake.input.separator, cut["model_threshold"], snakemake.threads)
scorer = None
if "separate" in snakemake.params.preprocess["steps"] and cut.get("score") == "model":
    from aquaflow.backends.scorer import MultipleScorer

    scorer = MultipleScorer(snakemake.input.scorer, snakemake.threads)
steps = pipeline.run(
    snakemake.input.raw,
    snakemake.params.preprocess,
    snakemake.output.folder,
    {"before_after": snakemake.output.before_after, "examples": snakemake.output.examples},
    separator,
    scorer,
)
logging.getLogger("preprocess").info("steps:\n%s", steps.to_string(index=False))
