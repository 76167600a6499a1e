# Standards-compliant exports and provenance per campaign (issue 12): Darwin Core Archive for
# OBIS/GBIF and a Workflow Run RO-Crate. Logic in scripts/aquaflow/{dwca,taxonomy,provenance}.py.


def taxonomy_table(wildcards):
    path = UC[wildcards.uc]["export"]["dwca"]["taxonomy"]
    return path or f"config/taxonomy/{wildcards.uc}.tsv"


def samples_table(wildcards):
    return UC[wildcards.uc]["campaigns"][wildcards.campaign]["samples"]["path"]


def dwca_settings(wildcards):
    """What export_dwca reads: export.dwca, the instrument, the campaign's sample column/id."""
    cfg = UC[wildcards.uc]
    campaign = cfg["campaigns"][wildcards.campaign]
    return {
        "dwca": {
            k: v for k, v in cfg["export"]["dwca"].items() if k not in ("enabled", "taxonomy")
        },
        "instrument": cfg["instrument"],
        "sample_column": campaign["samples"]["column"],
        "default_sample": str(
            campaign["metadata"].get("sample_id") or f"{wildcards.uc}_{wildcards.campaign}"
        ),
        "package_id": f"{wildcards.uc}_{wildcards.campaign}",
    }


def has_dwca(uc, campaign):
    cfg = UC[uc]
    return cfg["export"]["dwca"]["enabled"] and bool(cfg["campaigns"][campaign]["samples"]["path"])


def dwca_zip(uc, campaign):
    return f"{RESULTS}/{uc}/campaigns/{campaign}/export/dwca_{uc}_{campaign}.zip"


def rocrate_products(wildcards):
    """The campaign's exports that exist in this configuration (outputs of the run, in the crate)."""
    uc, campaign = wildcards.uc, wildcards.campaign
    base = f"{RESULTS}/{uc}/campaigns/{campaign}"
    out = {}
    if UC[uc]["export"]["ecotaxa"]["enabled"]:
        out["ecotaxa"] = f"{base}/export/ecotaxa_{uc}_{campaign}.tsv"
    if has_dwca(uc, campaign):
        out["dwca"] = dwca_zip(uc, campaign)
        out["dwca_report"] = f"{base}/export/dwca_{uc}_{campaign}.json"
        out["samples"] = samples_table(wildcards)
        out["taxonomy"] = taxonomy_table(wildcards)
    return out


def resolved_config(wildcards):
    """The whole validated use case (defaults filled): provenance records all of it."""
    return UC[wildcards.uc]


def standards_targets():
    out = []
    for uc, cfg in UC.items():
        for campaign in campaigns(uc):
            if has_dwca(uc, campaign):
                out.append(dwca_zip(uc, campaign))
            if cfg["export"]["rocrate"]["enabled"]:
                out.append(
                    f"{RESULTS}/{uc}/campaigns/{campaign}/export/rocrate_{uc}_{campaign}.zip"
                )
    return out


rule export_dwca:
    input:
        predictions=rules.infer_gather.output.predictions,
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
        config=resolved_config,
        name="{uc} campaign {campaign}",
        snakefile=str(Path(workflow.basedir) / "Snakefile"),
        rule_files=sorted(str(p) for p in (Path(workflow.basedir) / "workflow").glob("*.smk")),
    script:
        "../scripts/export_rocrate.py"
