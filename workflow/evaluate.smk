rule evaluate:
    input:
        raw=dataset_root,
        manifest=rules.prepare.output.manifest,
        weights=rules.train.output.weights,
        card=rules.train.output.card,
        history=rules.train.output.history,
    output:
        metrics=f"{RESULTS}/{{uc}}/eval/metrics.json",
        summary=report(
            f"{RESULTS}/{{uc}}/eval/summary.tsv",
            caption="report/metrics.rst",
            category="{uc}",
            subcategory="Evaluation",
            labels={"use case": "{uc}", "figure": "headline metrics"},
        ),
        per_class=report(
            f"{RESULTS}/{{uc}}/eval/per_class.tsv",
            caption="report/per_class.rst",
            category="{uc}",
            subcategory="Evaluation",
            labels={"use case": "{uc}", "figure": "per-class table"},
        ),
        confusion=report(
            f"{RESULTS}/{{uc}}/eval/confusion_matrix.png",
            caption="report/confusion_matrix.rst",
            category="{uc}",
            subcategory="Evaluation",
            labels={"use case": "{uc}", "figure": "confusion matrix"},
        ),
        curve=report(
            f"{RESULTS}/{{uc}}/eval/training_curve.png",
            caption="report/training_curve.rst",
            category="{uc}",
            subcategory="Training",
            labels={"use case": "{uc}", "figure": "training curve"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/evaluate.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/evaluate.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        usecase=uc_config,
        mlflow=mlflow_settings,
    script:
        "../scripts/evaluate.py"
