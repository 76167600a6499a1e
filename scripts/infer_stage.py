"""Step: pack each shard's images into one bundle for jobs without a shared file system."""

import logging
from pathlib import Path

from aquaflow import runlog
from aquaflow.engine import staging

runlog.setup(snakemake.log[0])
counts = staging.stage(
    snakemake.input.inputs,
    {Path(p).stem: p for p in snakemake.output},  # scatteritem -> bundle
    logical_root=snakemake.params.raw_name or "",
    local_root=snakemake.input.raw or "",
)
logging.getLogger("aquaflow").info("staged: %s", counts)
