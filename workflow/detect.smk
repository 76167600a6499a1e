# Detection, instance segmentation and oriented boxes (task detect | segment | obb): Ultralytics
# YOLO, offline. Same flow as classification: prepare -> train -> evaluate -> campaign shards -> gather.
# The rules only serve use cases whose task is not classify (wildcard_constraints), and win over
# the classification rules for the files both could make (ruleorder).

if "ucs_where" not in globals():  # main's common.smk will define it (CONTRACT.md); same behaviour

    def ucs_where(predicate):
        """A regex matching exactly the use cases whose config satisfies predicate."""
        names = [uc for uc, cfg in UC.items() if predicate(cfg)]
        return "|".join(names) or "(?!)"


def is_detection(cfg):
    return cfg.get("task", "classify") != "classify"


DETECT_UCS = ucs_where(is_detection)
CAMPAIGN_NAME = "[A-Za-z0-9][A-Za-z0-9_.-]*"


ruleorder: train_detect > train
ruleorder: evaluate_detect > evaluate
ruleorder: detect_inputs > infer_inputs
ruleorder: detect_shard > infer_shard
ruleorder: detect_gather > infer_gather


def detection_task(wildcards):
    return UC[wildcards.uc]["task"]


def detection_section(key):
    """An input function returning one key of the use case's `detection` section."""

    def get(wildcards):
        return UC[wildcards.uc]["detection"][key]

    return get


def detection_training(wildcards):
    d = UC[wildcards.uc]["detection"]
    return {"model": d["model"], "imgsz": d["imgsz"], "train": d["train"]}


def detection_evaluation(wildcards):
    d = UC[wildcards.uc]["detection"]
    return {"imgsz": d["imgsz"], "predict": d["predict"], "evaluate": d["evaluate"]}


def detection_prediction(wildcards):
    d = UC[wildcards.uc]["detection"]
    return {**d["predict"], "imgsz": d["imgsz"], "pixel_size": d["pixel_size"]}


def detect_campaign_inputs(wildcards):
    return UC[wildcards.uc]["campaigns"][wildcards.campaign]["inputs"]


def detect_campaign_raw(wildcards):
    """The fetched source, for campaigns that predict the use case's own images (kind dataset)."""
    kinds = {i["kind"] for i in detect_campaign_inputs(wildcards)}
    return f"{RESOURCES}/{wildcards.uc}/raw" if "dataset" in kinds else []


def detect_shard_files(kind, ext):
    def get(wildcards):
        base = f"{RESULTS}/{wildcards.uc}/campaigns/{wildcards.campaign}"
        return gather.infer(f"{base}/{kind}/{{scatteritem}}.{ext}")

    return get


def detect_targets(uc):
    """What `rule all` asks for a detection use case: model, evaluation, every campaign."""
    base = f"{RESULTS}/{uc}"
    out = [f"{base}/model/model_card.json", f"{base}/eval/metrics.json"]
    for campaign in UC[uc].get("campaigns", {}):
        c = f"{base}/campaigns/{campaign}"
        out += [
            f"{c}/predictions.parquet",
            f"{c}/counts.parquet",
            f"{c}/detections.json",
            f"{c}/summary.json",
            f"{c}/overlays",
        ]
    return out


rule detect_prepare:
    input:
        raw=f"{RESOURCES}/{{uc}}/raw",
    output:
        data=directory(f"{RESULTS}/{{uc}}/detect/data"),
    log:
        f"{RESULTS}/{{uc}}/logs/detect_prepare.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/detect_prepare.tsv"
    wildcard_constraints:
        uc=DETECT_UCS,
    conda:
        "../envs/torch.yaml"
    params:
        data=detection_section("data"),
        task=detection_task,
    script:
        "../scripts/detect_prepare.py"


rule train_detect:
    input:
        data=rules.detect_prepare.output.data,
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.pt",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
        history=f"{RESULTS}/{{uc}}/model/history.tsv",
        curve=report(
            f"{RESULTS}/{{uc}}/model/training_curve.png",
            caption="report/detect_training_curve.rst",
            category="{uc}",
            subcategory="Training",
            labels={"use case": "{uc}", "figure": "training curve"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/train_detect.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/train_detect.tsv"
    wildcard_constraints:
        uc=DETECT_UCS,
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=480,
    params:
        spec=detection_training,
        task=detection_task,
        work=f"{RESULTS}/{{uc}}/detect/train",
        ultralytics=f"{RESULTS}/{{uc}}/detect/ultralytics",
    script:
        "../scripts/detect_train.py"


rule evaluate_detect:
    input:
        data=rules.detect_prepare.output.data,
        weights=rules.train_detect.output.weights,
        card=rules.train_detect.output.card,
    output:
        metrics=f"{RESULTS}/{{uc}}/eval/metrics.json",
        coco=f"{RESULTS}/{{uc}}/eval/detections.json",
        summary=report(
            f"{RESULTS}/{{uc}}/eval/summary.tsv",
            caption="report/detect_metrics.rst",
            category="{uc}",
            subcategory="Evaluation",
            labels={"use case": "{uc}", "figure": "headline metrics"},
        ),
        per_class=report(
            f"{RESULTS}/{{uc}}/eval/per_class.tsv",
            caption="report/detect_per_class.rst",
            category="{uc}",
            subcategory="Evaluation",
            labels={"use case": "{uc}", "figure": "per-class table"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/evaluate_detect.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/evaluate_detect.tsv"
    wildcard_constraints:
        uc=DETECT_UCS,
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        spec=detection_evaluation,
        work=f"{RESULTS}/{{uc}}/detect/eval",
        ultralytics=f"{RESULTS}/{{uc}}/detect/ultralytics",
    script:
        "../scripts/detect_evaluate.py"


rule detect_inputs:
    input:
        raw=detect_campaign_raw,
    output:
        f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/inputs.parquet",
    log:
        f"{RESULTS}/{{uc}}/logs/detect_inputs/{{campaign}}.log",
    wildcard_constraints:
        uc=DETECT_UCS,
        campaign=CAMPAIGN_NAME,
    conda:
        "../envs/data.yaml"
    params:
        inputs=detect_campaign_inputs,
    script:
        "../scripts/detect_inputs.py"


rule detect_shard:
    input:
        inputs=rules.detect_inputs.output[0],
        weights=rules.train_detect.output.weights,
        card=rules.train_detect.output.card,
    output:
        predictions=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/shards/{{scatteritem}}.parquet",
        counts=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/count_shards/{{scatteritem}}.parquet",
        rejected=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/rejected_shards/{{scatteritem}}.parquet",
        summary=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/summaries/{{scatteritem}}.json",
    log:
        f"{RESULTS}/{{uc}}/logs/detect_shard/{{campaign}}/{{scatteritem}}.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/detect_shard/{{campaign}}/{{scatteritem}}.tsv"
    wildcard_constraints:
        uc=DETECT_UCS,
        campaign=CAMPAIGN_NAME,
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=6000,
        runtime=120,
    params:
        settings=detection_prediction,
        ultralytics=f"{RESULTS}/{{uc}}/detect/ultralytics",
    script:
        "../scripts/detect_shard.py"


rule detect_gather:
    input:
        predictions=detect_shard_files("shards", "parquet"),
        counts=detect_shard_files("count_shards", "parquet"),
        rejected=detect_shard_files("rejected_shards", "parquet"),
        summaries=detect_shard_files("summaries", "json"),
        card=rules.train_detect.output.card,
    output:
        predictions=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/predictions.parquet",
        counts=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/counts.parquet",
        rejected=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/rejected.parquet",
        dataset=directory(f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/dataset"),
        summary=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/summary.json",
        coco=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/detections.json",
        coco_images=f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/coco_images.json",
        table=report(
            f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/summary.tsv",
            caption="report/inference_summary.rst",
            category="{uc}",
            subcategory="Predictions",
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "detection summary"},
        ),
        overlays=report(
            directory(f"{RESULTS}/{{uc}}/campaigns/{{campaign}}/overlays"),
            patterns=["{name}.png"],
            caption="report/detect_overlays.rst",
            category="{uc}",
            subcategory="Predictions",
            labels={"use case": "{uc}", "campaign": "{campaign}", "image": "{name}"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/detect_gather/{{campaign}}.log",
    wildcard_constraints:
        uc=DETECT_UCS,
        campaign=CAMPAIGN_NAME,
    conda:
        "../envs/torch.yaml"
    params:
        overlays=detection_section("overlays"),
    script:
        "../scripts/detect_gather.py"
