rule preprocess:
    input:
        raw=rules.fetch.output[0],
        separator=separator_model,  # separate.method model: the instance model folder
        scorer=scorer_model,  # separate.score model: the multiple classifier folder
    output:
        folder=directory(f"{RESULTS}/{{uc}}/preprocessed"),
        before_after=report(
            f"{RESULTS}/{{uc}}/preprocess/before_after.png",
            caption="report/preprocess_before_after.rst",
            category="{uc}",
            subcategory="Preprocessing",
            labels={"use case": "{uc}", "figure": "before / after preprocessing"},
        ),
        examples=report(
            f"{RESULTS}/{{uc}}/preprocess/examples.png",
            caption="report/preprocess_examples.rst",
            category="{uc}",
            subcategory="Preprocessing",
            labels={"use case": "{uc}", "figure": "example vignettes / tiles"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/preprocess.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/preprocess.tsv"
    conda:
        "../envs/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        preprocess=with_opt_outs(uc_section("preprocess")),  # + allow_paths_outside_root
    script:
        "../scripts/preprocess.py"
