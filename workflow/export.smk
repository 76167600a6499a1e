# EcoTaxa import per campaign: one object per classified item or per detection (the task decides the
# rows: aquaflow.tasks.objects, via params), each with its image or crop in the zip.


rule export_ecotaxa:
    input:
        unpack(ecotaxa_samples),  # per-object sample_id/acq_id, position and date
        predictions=rules.infer_gather.output.predictions,
    output:
        tsv=f"{CAMPAIGN}/export/ecotaxa_{{uc}}_{{campaign}}.tsv",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/export_ecotaxa.log",
    conda:
        "../envs/data.yaml"
    params:
        ecotaxa=ecotaxa_settings,
    script:
        "../scripts/export_ecotaxa.py"


rule export_ecotaxa_bundle:
    input:
        predictions=rules.infer_gather.output.predictions,
        tsv=rules.export_ecotaxa.output.tsv,
        staged=staged_bundles,  # the images, without a shared file system
    output:
        f"{CAMPAIGN}/export/ecotaxa_{{uc}}_{{campaign}}.zip",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/export_ecotaxa_bundle.log",
    conda:
        "../envs/data.yaml"
    params:
        objects=objects_settings,
        strip_exif=lambda wildcards: UC[wildcards.uc]["export"]["strip_exif"],
    script:
        "../scripts/export_bundle.py"


# Without a shared file system the samples table (a file on this host) reaches the jobs as a copy in
# the results, made here: like import_model, a local rule.
localrules:
    stage_samples,


rule stage_samples:
    output:
        f"{CAMPAIGN}/samples_table.csv",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/stage_samples.log",
    conda:
        "../envs/data.yaml"
    params:
        table=samples_source,
    script:
        "../scripts/stage_samples.py"
