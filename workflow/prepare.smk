rule prepare:
    input:
        raw=dataset_root,
    output:
        manifest=f"{RESULTS}/{{uc}}/prepared/manifest.parquet",
        rejected=f"{RESULTS}/{{uc}}/prepared/rejected.parquet",
        classes=f"{RESULTS}/{{uc}}/prepared/classes.json",
    log:
        f"{RESULTS}/{{uc}}/logs/prepare.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/prepare.tsv"
    conda:
        "../envs/data.yaml"
    params:
        dataset=with_opt_outs(uc_section("dataset")),
    script:
        "../scripts/prepare.py"
