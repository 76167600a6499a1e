# Input functions and config loading only; rules live in the other .smk files.
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from aquaflow.config import ConfigError, load_workflow_config  # noqa: E402
from snakemake.exceptions import WorkflowError  # noqa: E402

try:
    CONFIG, UC = load_workflow_config(config, Path(workflow.basedir) / "workflow" / "schemas")
except ConfigError as err:
    raise WorkflowError(str(err)) from None

RESULTS = CONFIG["results"]
RESOURCES = CONFIG["resources"]
ENVS = Path(workflow.basedir) / "envs"


wildcard_constraints:
    uc="|".join(UC),


def uc_config(wildcards):
    return UC[wildcards.uc]


def uc_section(section):
    """An input function returning one section of the use case config."""

    def get(wildcards):
        return UC[wildcards.uc][section]

    return get


def has_preprocess(uc):
    return bool(UC[uc]["preprocess"]["steps"])


def dataset_root(wildcards):
    """Where prepare, train, evaluate and infer_inputs find images: the preprocess output folder
    when the use case has preprocess steps, else the fetched source."""
    if has_preprocess(wildcards.uc):
        return f"{RESULTS}/{wildcards.uc}/preprocessed"
    return f"{RESOURCES}/{wildcards.uc}/raw"


def preprocess_targets(uc):
    out = []
    if has_preprocess(uc):
        out += [
            f"{RESULTS}/{uc}/preprocess/before_after.png",
            f"{RESULTS}/{uc}/preprocess/examples.png",
        ]
    if UC[uc]["litter"]["enabled"]:
        out += [f"{RESULTS}/{uc}/litter/summary.tsv", f"{RESULTS}/{uc}/litter/overlays"]
    return out


def mlflow_settings(wildcards):
    return {**CONFIG["mlflow"], "results": RESULTS}


def shard_files(kind, ext):
    """All shard outputs of one kind (predictions, rejected, summary) for a use case."""

    def get(wildcards):
        return gather.infer(f"{RESULTS}/{wildcards.uc}/predictions/{kind}/{{scatteritem}}.{ext}")

    return get


def ecotaxa_targets(uc):
    cfg = UC[uc]["export"]["ecotaxa"]
    if not cfg["enabled"]:
        return []
    out = [f"{RESULTS}/{uc}/export/ecotaxa/ecotaxa_{uc}.tsv"]
    if cfg["images"]:
        out.append(f"{RESULTS}/{uc}/export/ecotaxa_{uc}.zip")
    return out


def all_targets():
    targets = []
    for uc in UC:
        if UC[uc]["task"] != "classify":  # detection, segmentation, obb: workflow/detect.smk
            targets += detect_targets(uc)
            continue
        base = f"{RESULTS}/{uc}"
        targets += [
            f"{base}/prepared/manifest.parquet",
            f"{base}/model/model.safetensors",
            f"{base}/eval/metrics.json",
            f"{base}/eval/confusion_matrix.png",
            f"{base}/eval/training_curve.png",
            f"{base}/predictions/predictions.parquet",
            f"{base}/predictions/summary.json",
        ]
        targets += ecotaxa_targets(uc)
        targets += preprocess_targets(uc)
    return targets
