# k-fold cross-validation of a use case's own recipe: `snakemake cv` (not part of `all`).
# cv_folds assigns every labelled image a fold; cv_train trains the recipe with the use case's own
# classification backend (torch, keras, ultralytics) once per fold (k separate jobs: parallel on a
# cluster, on a GPU where there is one) and predicts its held-out fold;
# cv_gather pools the out-of-fold predictions into figures with intervals (aquaflow.engine.cv), beside
# the shipped model's own figures on every labelled image (cv_shipped): it should do at least as well.


rule cv:
    input:
        cv_targets(),


rule cv_folds:
    input:
        manifest=rules.prepare.output.manifest,
    output:
        f"{RESULTS}/{{uc}}/cv/folds.parquet",
    log:
        f"{RESULTS}/{{uc}}/logs/cv_folds.log",
    conda:
        "../envs/torch.yaml"
    params:
        cv=lambda wildcards: UC[wildcards.uc]["cv"],
    script:
        "../scripts/cv_folds.py"


rule cv_train:
    input:
        raw=dataset_root,
        folds=rules.cv_folds.output,
        classes=rules.prepare.output.classes,
        pretrained=cv_pretrained,
    output:
        manifest=f"{RESULTS}/{{uc}}/cv/fold{{fold}}/manifest.parquet",
        model=directory(f"{RESULTS}/{{uc}}/cv/fold{{fold}}/model"),
        predictions=f"{RESULTS}/{{uc}}/cv/fold{{fold}}/predictions.parquet",
    log:
        f"{RESULTS}/{{uc}}/logs/cv_train_{{fold}}.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/cv_train_{{fold}}.tsv"
    wildcard_constraints:
        uc=ucs_where(cross_validated),
        fold=r"\d+",
    conda:
        backend_env
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        backend=lambda wildcards: backend(UC[wildcards.uc]),
        weights=lambda wildcards: MODEL_FILE[backend(UC[wildcards.uc])],
        settings=training_settings,
        evaluation=evaluation_settings,
        mlflow=mlflow_settings,
    script:
        "../scripts/cv_train.py"


rule cv_shipped:
    input:
        raw=dataset_root,
        manifest=rules.prepare.output.manifest,
        weights=model_weights,
        card=model_card,
    output:
        f"{RESULTS}/{{uc}}/cv/shipped.parquet",
    log:
        f"{RESULTS}/{{uc}}/logs/cv_shipped.log",
    conda:
        backend_env
    threads: 2
    resources:
        gpu=1,
    params:
        evaluation=evaluation_settings,
    script:
        "../scripts/cv_shipped.py"


rule cv_gather:
    input:
        predictions=cv_fold_predictions,
        classes=rules.prepare.output.classes,
        shipped=rules.cv_shipped.output,
    output:
        metrics=f"{RESULTS}/{{uc}}/cv/metrics.json",
        summary=report(
            f"{RESULTS}/{{uc}}/cv/summary.tsv",
            caption="report/cv_summary.rst",
            category="{uc}",
            subcategory="Cross-validation",
            labels={"use case": "{uc}", "figure": "pooled out-of-fold metrics"},
        ),
        folds=f"{RESULTS}/{{uc}}/cv/folds.tsv",
        predictions=f"{RESULTS}/{{uc}}/cv/predictions.parquet",
    log:
        f"{RESULTS}/{{uc}}/logs/cv_gather.log",
    conda:
        "../envs/torch.yaml"
    params:
        intervals=lambda wildcards: UC[wildcards.uc]["intervals"],
        mlflow=mlflow_settings,
    script:
        "../scripts/cv_gather.py"
