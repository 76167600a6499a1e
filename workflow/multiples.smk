# ZooScan "multiple" vignettes: the report figure of the `separate` preprocess step (objects per scan
# and ESD spectra before / after separation). The step itself runs inside rule preprocess.


rule separation_figure:
    input:
        folder=rules.preprocess.output.folder,
    output:
        report(
            f"{RESULTS}/{{uc}}/preprocess/separation.png",
            caption="report/preprocess_separation.rst",
            category="{uc}",
            subcategory="Preprocessing",
            labels={"use case": "{uc}", "figure": "objects before / after separation"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/separation_figure.log",
    wildcard_constraints:
        uc=ucs_where(separates),
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/separation_figure.py"
