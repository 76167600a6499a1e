rule evaluate:
    input:
        raw=dataset_root,
        manifest=rules.prepare.output.manifest,
        weights=model_weights,
        card=model_card,
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
    log:
        f"{RESULTS}/{{uc}}/logs/evaluate.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/evaluate.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: cfg["task"] == "classify"),
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        settings=evaluation_settings,
        mlflow=mlflow_settings,
    script:
        "../scripts/evaluate.py"
