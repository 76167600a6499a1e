# Semantic segmentation of georeferenced rasters (task semantic): segmentation-models-pytorch,
# offline. Same flow as every task: prepare -> train -> evaluate -> campaign shards -> gather; the
# campaign's MLflow inference run (track_inference), cross-campaign summary (campaign_summary) and
# RO-Crate (export_rocrate) are the common rules. The rules only serve semantic use cases
# (wildcard_constraints); the campaign listing and gather win over the classifier's (ruleorder).
# A given model (model.source path / package / mlflow) is copied in by import_model (workflow/train.smk).
# Drift: drift_reference_semantic (the model on the training rasters), then the common drift rules.
for _uc, _cfg in UC.items():
    if is_semantic(_cfg) and trains(_cfg) and "source" not in _cfg:
        raise WorkflowError(
            f"use case {_uc}: task semantic trains on labelled rasters: set `source` "
            "(or give a model: model.source path / package / mlflow)"
        )


ruleorder: semantic_inputs > infer_inputs
ruleorder: semantic_gather > infer_gather


rule semantic_prepare:
    input:
        raw=f"{RESOURCES}/{{uc}}/raw",
    output:
        manifest=f"{RESULTS}/{{uc}}/semantic/manifest.parquet",
        labels=directory(f"{RESULTS}/{{uc}}/semantic/labels"),
    log:
        f"{RESULTS}/{{uc}}/logs/semantic_prepare.log",
    wildcard_constraints:
        uc=SEMANTIC_UCS,
    conda:
        "../envs/torch.yaml"
    params:
        settings=semantic_settings("data", "classes"),
    script:
        "../scripts/semantic_prepare.py"


rule train_semantic:
    input:
        manifest=rules.semantic_prepare.output.manifest,
        raw=f"{RESOURCES}/{{uc}}/raw",
        labels=rules.semantic_prepare.output.labels,
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.safetensors",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
        history=f"{RESULTS}/{{uc}}/model/history.tsv",
        curve=report(
            f"{RESULTS}/{{uc}}/model/training_curve.png",
            caption="report/semantic_training_curve.rst",
            category="{uc}",
            subcategory="Training",
            labels={"use case": "{uc}", "figure": "training curve"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/train_semantic.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/train_semantic.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: is_semantic(cfg) and trains(cfg)),
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=480,
    params:
        settings=semantic_settings("classes", "bands", "model", "train"),
        mlflow=mlflow_settings,
    script:
        "../scripts/semantic_train.py"


rule evaluate_semantic:
    input:
        manifest=rules.semantic_prepare.output.manifest,
        labels=rules.semantic_prepare.output.labels,
        weights=model_weights,
        card=model_card,
    output:
        metrics=f"{RESULTS}/{{uc}}/eval/metrics.json",
        rasters=directory(f"{RESULTS}/{{uc}}/eval/rasters"),
        summary=report(
            f"{RESULTS}/{{uc}}/eval/summary.tsv",
            caption="report/semantic_metrics.rst",
            category="{uc}",
            subcategory="Evaluation",
            labels={"use case": "{uc}", "figure": "headline metrics"},
        ),
        per_class=report(
            f"{RESULTS}/{{uc}}/eval/per_class.tsv",
            caption="report/semantic_metrics.rst",
            category="{uc}",
            subcategory="Evaluation",
            labels={"use case": "{uc}", "figure": "per-class table"},
        ),
        overlays=report(
            directory(f"{RESULTS}/{{uc}}/eval/overlays"),
            patterns=["{name}.png"],
            caption="report/semantic_overlays.rst",
            category="{uc}",
            subcategory="Evaluation",
            labels={"use case": "{uc}", "raster": "{name}"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/evaluate_semantic.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/evaluate_semantic.tsv"
    wildcard_constraints:
        uc=SEMANTIC_UCS,
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        settings=semantic_evaluation,
        mlflow=mlflow_settings,
    script:
        "../scripts/semantic_evaluate.py"


rule semantic_inputs:
    input:
        raw=campaign_raw,
    output:
        f"{CAMPAIGN}/inputs.parquet",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/semantic_inputs.log",
    wildcard_constraints:
        uc=SEMANTIC_UCS,
    conda:
        "../envs/torch.yaml"
    params:
        inputs=campaign_section("inputs"),
        data=semantic_listing,
    script:
        "../scripts/semantic_inputs.py"


rule semantic_shard:
    input:
        inputs=f"{CAMPAIGN}/inputs.parquet",
        weights=model_weights,
        card=model_card,
    output:
        rasters=directory(f"{CAMPAIGN}/semantic/{{scatteritem}}"),
        summary=f"{CAMPAIGN}/semantic/{{scatteritem}}.json",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/semantic_shard/{{scatteritem}}.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/{{campaign}}/semantic_shard/{{scatteritem}}.tsv"
    wildcard_constraints:
        uc=SEMANTIC_UCS,
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=120,
    params:
        settings=semantic_prediction,
    script:
        "../scripts/semantic_shard.py"


rule semantic_gather:
    input:
        inputs=f"{CAMPAIGN}/inputs.parquet",
        rasters=semantic_shard_files("dir"),
        summaries=semantic_shard_files("json"),
    output:
        predictions=f"{CAMPAIGN}/predictions.parquet",
        rejected=f"{CAMPAIGN}/rejected.parquet",
        summary=f"{CAMPAIGN}/summary.json",
        table=report(
            f"{CAMPAIGN}/summary.tsv",
            caption="report/semantic_campaign.rst",
            category="{uc}",
            subcategory="Campaign {campaign}",
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "areas per raster"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/semantic_gather.log",
    wildcard_constraints:
        uc=SEMANTIC_UCS,
    conda:
        "../envs/torch.yaml"
    params:
        classes=lambda wc: UC[wc.uc]["semantic"]["classes"],
    script:
        "../scripts/semantic_gather.py"


# Band pixels and predicted class cover of the reference rasters (drift.reference.splits).
rule drift_reference_semantic:
    input:
        manifest=rules.semantic_prepare.output.manifest,
        raw=f"{RESOURCES}/{{uc}}/raw",
        labels=rules.semantic_prepare.output.labels,
        weights=model_weights,
        card=model_card,
    output:
        reference=f"{RESULTS}/{{uc}}/model/drift_reference.npz",
        summary=f"{RESULTS}/{{uc}}/model/drift_reference.json",
    log:
        f"{RESULTS}/{{uc}}/logs/drift_reference.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/drift_reference.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: is_semantic(cfg) and drift_enabled(cfg)),
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        drift=drift_sample_settings,
        settings=semantic_prediction,
        mlflow=mlflow_settings,
    script:
        "../scripts/drift_reference_semantic.py"
