rule export_ecotaxa:
    input:
        predictions=rules.infer_gather.output.predictions,
    output:
        tsv=f"{RESULTS}/{{uc}}/export/ecotaxa/ecotaxa_{{uc}}.tsv",
    log:
        f"{RESULTS}/{{uc}}/logs/export_ecotaxa.log",
    conda:
        "../envs/data.yaml"
    params:
        usecase=uc_config,
        name="{uc}",
    script:
        "../scripts/export_ecotaxa.py"


rule export_ecotaxa_bundle:
    input:
        predictions=rules.infer_gather.output.predictions,
        tsv=rules.export_ecotaxa.output.tsv,
    output:
        f"{RESULTS}/{{uc}}/export/ecotaxa_{{uc}}.zip",
    log:
        f"{RESULTS}/{{uc}}/logs/export_ecotaxa_bundle.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/export_bundle.py"
