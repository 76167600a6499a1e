rule litter_summary:
    input:
        raw=rules.fetch.output[0],
        predictions=rules.infer_gather.output.predictions,
        card=rules.train.output.card,
    output:
        table=report(
            f"{RESULTS}/{{uc}}/litter/summary.tsv",
            caption="report/litter_summary.rst",
            category="{uc}",
            subcategory="Litter",
            labels={"use case": "{uc}", "figure": "litter per image"},
        ),
        overlays=report(
            directory(f"{RESULTS}/{{uc}}/litter/overlays"),
            patterns=["{name}.png"],
            caption="report/litter_overlay.rst",
            category="{uc}",
            subcategory="Litter",
            labels={"use case": "{uc}", "image": "{name}"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/litter_summary.log",
    conda:
        "../envs/data.yaml"
    params:
        usecase=uc_config,
    script:
        "../scripts/litter_summary.py"
