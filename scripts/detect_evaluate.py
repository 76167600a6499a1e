"""Step: evaluate a detection model on the held-out split (see aquaflow.engine.evaluate_detect)."""

from aquaflow import runlog
from aquaflow.engine import evaluate_detect as evaluate

runlog.setup(snakemake.log[0])
evaluate.run(
    data_dir=snakemake.input.data,
    weights=snakemake.input.weights,
    card_path=snakemake.input.card,
    spec=snakemake.params.spec,
    out=dict(snakemake.output.items()),
    work=snakemake.params.work,
    ultralytics_dir=snakemake.params.ultralytics,
    mlflow_cfg=snakemake.params.mlflow,
)
