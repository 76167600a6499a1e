"""Step: a campaign's Darwin Core Archive for OBIS/GBIF (see aquaflow.standards.dwca)."""

from aquaflow import runlog
from aquaflow.io import read_json
from aquaflow.standards import dwca

runlog.setup(snakemake.log[0])
s = snakemake.params.settings
dwca.export(
    predictions=snakemake.input.predictions,
    samples=snakemake.input.samples,
    taxonomy=snakemake.input.taxonomy,
    out=snakemake.output.dwca,
    report=snakemake.output.report,
    cfg=s["dwca"],
    instrument=s["instrument"],
    sample_column=s["sample_column"],
    default_sample=s["default_sample"],
    package_id=s["package_id"],
    card=read_json(snakemake.input.card),
    objects=snakemake.params.objects,
    counts=snakemake.input.get("counts"),
)
