"""Step: a campaign's Workflow Run RO-Crate, zipped (see aquaflow.standards.provenance)."""

from aquaflow import runlog
from aquaflow.io import read_json
from aquaflow.standards import provenance

runlog.setup(snakemake.log[0])
inp = snakemake.input
card = read_json(inp.card)
run_id = (card.get("mlflow") or {}).get("run_id")
inputs = {"model card": inp.card, "inference input table": inp.inputs}
inputs.update({role: inp[role] for role in ("samples", "taxonomy") if hasattr(inp, role)})
outputs = {"predictions": inp.predictions, "rejected items": inp.rejected, "summary": inp.summary}
optional = {
    "counts": "detections per image",
    "coco": "COCO results (detections)",
    "coco_images": "COCO images and categories",
    "ecotaxa": "EcoTaxa import table",
    "dwca": "Darwin Core Archive",
    "dwca_report": "Darwin Core Archive report",
}
outputs.update({role: inp[key] for key, role in optional.items() if hasattr(inp, key)})
rocrate = snakemake.params.config["export"]["rocrate"]
# Snakemake's own records of the jobs upstream (none where jobs share no file system with it)
jobs = provenance.job_records(
    snakemake.params.records, [*map(str, inputs.values()), *map(str, outputs.values())]
)
provenance.write(
    snakemake.output[0],
    name=snakemake.params.name,
    snakefile=snakemake.params.snakefile,
    rule_files=snakemake.params.rule_files,
    config=snakemake.params.config,
    inputs=inputs,
    outputs=outputs,
    mlflow_runs=[run_id] if run_id else [],
    task=snakemake.params.task,
    jobs=jobs,
    workflow_url=rocrate["workflow_url"],
)
