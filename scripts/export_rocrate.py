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
outputs.update({role: inp[role] for role in ("ecotaxa", "dwca", "dwca_report") if hasattr(inp, role)})
provenance.write(
    snakemake.output[0],
    name=snakemake.params.name,
    snakefile=snakemake.params.snakefile,
    rule_files=snakemake.params.rule_files,
    config=snakemake.params.config,
    inputs=inputs,
    outputs=outputs,
    mlflow_runs=[run_id] if run_id else [],
)
