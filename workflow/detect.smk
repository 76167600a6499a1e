# Detection, instance segmentation and oriented boxes (task detect | segment | obb): Ultralytics
# YOLO, offline. Same flow as classification: prepare -> train -> evaluate -> campaign shards -> gather.
# Training logs an MLflow run and registers the model (mlflow.registered_model), as every trainer;
# evaluation adds its held-out figures to that run.
# The rules only serve use cases whose task is not classify (wildcard_constraints); campaign inputs
# come from infer_inputs (task-agnostic); detect_gather wins over infer_gather (ruleorder).


ruleorder: detect_gather > infer_gather


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
        data=with_opt_outs(detection_section("data")),
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
        uc=ucs_where(lambda cfg: is_detection(cfg) and trains(cfg)),
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
        mlflow=mlflow_settings,
    script:
        "../scripts/detect_train.py"


# A detector trained elsewhere (model.source path | package | mlflow): rule import_ultralytics_model
# (workflow/ultralytics.smk) copies its model.pt in, its task checked.


rule evaluate_detect:
    input:
        data=rules.detect_prepare.output.data,
        weights=model_weights,
        card=model_card,
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
        mlflow=mlflow_settings,
    script:
        "../scripts/detect_evaluate.py"


rule detect_shard:
    input:
        inputs=shard_table,  # inputs.parquet, or the shard's staged bundle (workflow/staging.smk)
        weights=model_weights,
        card=model_card,
    output:
        predictions=f"{CAMPAIGN}/shards/{{scatteritem}}.parquet",
        counts=f"{CAMPAIGN}/count_shards/{{scatteritem}}.parquet",
        rejected=f"{CAMPAIGN}/rejected_shards/{{scatteritem}}.parquet",
        summary=f"{CAMPAIGN}/summaries/{{scatteritem}}.json",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/detect_shard/{{scatteritem}}.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/{{campaign}}/detect_shard/{{scatteritem}}.tsv"
    wildcard_constraints:
        uc=DETECT_UCS,
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
        inputs=f"{CAMPAIGN}/inputs.parquet",
        predictions=detect_shard_files("shards", "parquet"),
        counts=detect_shard_files("count_shards", "parquet"),
        rejected=detect_shard_files("rejected_shards", "parquet"),
        summaries=detect_shard_files("summaries", "json"),
        card=model_card,
        staged=staged_bundles,  # the overlays' images, without a shared file system
    output:
        predictions=f"{CAMPAIGN}/predictions.parquet",
        counts=f"{CAMPAIGN}/counts.parquet",
        rejected=f"{CAMPAIGN}/rejected.parquet",
        dataset=directory(f"{CAMPAIGN}/dataset"),
        summary=f"{CAMPAIGN}/summary.json",
        coco=f"{CAMPAIGN}/detections.json",
        coco_images=f"{CAMPAIGN}/coco_images.json",
        table=report(
            f"{CAMPAIGN}/summary.tsv",
            caption="report/inference_summary.rst",
            category="{uc}",
            subcategory="Campaign {campaign}",
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "detection summary"},
        ),
        overlays=report(
            directory(f"{CAMPAIGN}/overlays"),
            patterns=["{name}.png"],
            caption="report/detect_overlays.rst",
            category="{uc}",
            subcategory="Campaign {campaign}",
            labels={"use case": "{uc}", "campaign": "{campaign}", "image": "{name}"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/detect_gather.log",
    wildcard_constraints:
        uc=DETECT_UCS,
    conda:
        "../envs/torch.yaml"
    params:
        overlays=detection_section("overlays"),
    script:
        "../scripts/detect_gather.py"
