"""Step (on the host): the campaign's samples table copied into the results, for jobs that share no
file system with it (aquaflow.standards.dwca.copy_samples)."""

from aquaflow import runlog
from aquaflow.standards import dwca

runlog.setup(snakemake.log[0])
dwca.copy_samples(snakemake.params.table["path"], snakemake.output[0])
