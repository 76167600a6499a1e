rule litter_summary:
    input:
        raw=rules.fetch.output[0],
        predictions=rules.infer_gather.output.predictions,
        card=model_card,
    output:
        table=report(
            f"{CAMPAIGN}/litter/summary.tsv",
            caption="report/litter_summary.rst",
            category="{uc}",
            subcategory="Litter",
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "litter per image"},
        ),
        overlays=report(
            directory(f"{CAMPAIGN}/litter/overlays"),
            patterns=["{name}.png"],
            caption="report/litter_overlay.rst",
            category="{uc}",
            subcategory="Litter",
            labels={"use case": "{uc}", "campaign": "{campaign}", "image": "{name}"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/litter_summary.log",
    conda:
        "../envs/data.yaml"
    params:
        litter=uc_section("litter"),
    script:
        "../scripts/litter_summary.py"
