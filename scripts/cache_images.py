"""Step: decode the prepared images once at training size (see aquaflow.data.loader.cache_step)."""

from pathlib import Path

from aquaflow import runlog
from aquaflow.data import loader

stream = runlog.setup(snakemake.log[0])
loader.cache_step(
    manifest_path=snakemake.input.manifest,
    images_root=Path(snakemake.input.raw) / snakemake.params.images,
    size=int(snakemake.wildcards.size),
    out=snakemake.output.cache,
    threads=snakemake.threads,
    log_stream=stream,
)
