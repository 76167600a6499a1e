"""Step: fetch a use case's pretrained backbone weights (see aquaflow.backends.pretrained.fetch)."""

from aquaflow import runlog
from aquaflow.backends import pretrained

runlog.setup(snakemake.log[0])
spec = snakemake.params.spec
if not spec:
    raise ValueError(f"use case {snakemake.wildcards.uc!r}: model.pretrained is null, nothing to fetch")
if pretrained.file_name(spec) != snakemake.wildcards.file:
    raise ValueError(
        f"use case {snakemake.wildcards.uc!r}: model.pretrained names {pretrained.file_name(spec)!r}, "
        f"not {snakemake.wildcards.file!r}"
    )
pretrained.fetch(spec, snakemake.output[0], snakemake.params.cache)
