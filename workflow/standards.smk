# Standards-compliant exports and provenance per campaign of every task: Darwin Core Archive for
# OBIS/GBIF and a Workflow Run RO-Crate. Logic in aquaflow.standards.{dwca,taxonomy,provenance}; the
# rows (classified items or detections) are the task's (aquaflow.tasks.objects, params `objects`).


rule export_dwca:
    input:
        unpack(campaign_tables),  # predictions (+ counts per image of a detection campaign)
        card=model_card,
        samples=samples_table,
        taxonomy=taxonomy_table,
    output:
        dwca=f"{CAMPAIGN}/export/dwca_{{uc}}_{{campaign}}.zip",
        report=f"{CAMPAIGN}/export/dwca_{{uc}}_{{campaign}}.json",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/export_dwca.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/{{campaign}}/export_dwca.tsv"
    conda:
        "../envs/data.yaml"
    params:
        settings=dwca_settings,
        objects=objects_settings,
    script:
        "../scripts/export_dwca.py"


rule export_rocrate:
    input:
        unpack(rocrate_products),
        card=model_card,
        inputs=rules.infer_inputs.output[0],
        predictions=rules.infer_gather.output.predictions,
        rejected=rules.infer_gather.output.rejected,
        summary=rules.infer_gather.output.summary,
    output:
        f"{CAMPAIGN}/export/rocrate_{{uc}}_{{campaign}}.zip",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/export_rocrate.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/{{campaign}}/export_rocrate.tsv"
    conda:
        "../envs/data.yaml"
    params:
        config=provenance_config,
        task=detection_task,  # the use case's task (words the run's description)
        name="{uc} campaign {campaign}",
        snakefile=str(Path(workflow.basedir) / "Snakefile"),
        rule_files=sorted(str(p) for p in (Path(workflow.basedir) / "workflow").glob("*.smk")),
        records=".snakemake/metadata",  # Snakemake's job records: one CreateAction per upstream job
    script:
        "../scripts/export_rocrate.py"
