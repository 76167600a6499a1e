# Bulk inference, one campaign at a time: list the inputs, predict in shards, gather.


rule infer_inputs:
    input:
        raw=campaign_raw,
    output:
        f"{CAMPAIGN}/inputs.parquet",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/infer_inputs.log",
    conda:
        "../envs/data.yaml"
    params:
        inputs=with_opt_outs(campaign_section("inputs")),
        images=images_folder,
        raw_name=campaign_raw,
    script:
        "../scripts/infer_inputs.py"


rule infer_shard:
    input:
        inputs=shard_table,  # inputs.parquet, or the shard's staged bundle (workflow/staging.smk)
        weights=model_weights,
        card=model_card,
    output:
        predictions=f"{CAMPAIGN}/shards/{{scatteritem}}.parquet",
        rejected=f"{CAMPAIGN}/rejected_shards/{{scatteritem}}.parquet",
        summary=f"{CAMPAIGN}/summaries/{{scatteritem}}.json",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/infer_shard/{{scatteritem}}.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/{{campaign}}/infer_shard/{{scatteritem}}.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: cfg["task"] == "classify"),
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=120,
    params:
        inference=with_opt_outs(uc_section("inference")),  # safe_mode: config, never the card
    script:
        "../scripts/infer_shard.py"


rule infer_gather:
    input:
        inputs=f"{CAMPAIGN}/inputs.parquet",  # what its listing skipped (in the file's metadata)
        predictions=shard_files("shards", "parquet"),
        rejected=shard_files("rejected_shards", "parquet"),
        summaries=shard_files("summaries", "json"),
    output:
        predictions=f"{CAMPAIGN}/predictions.parquet",
        rejected=f"{CAMPAIGN}/rejected.parquet",
        dataset=directory(f"{CAMPAIGN}/dataset"),
        summary=f"{CAMPAIGN}/summary.json",
        table=report(
            f"{CAMPAIGN}/summary.tsv",
            caption="report/inference_summary.rst",
            category="{uc}",
            subcategory="Campaign {campaign}",
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "inference summary"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/infer_gather.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/infer_gather.py"


# Counts per class per campaign: the time series across years / cruises / runs.
rule campaign_summary:
    input:
        campaign_summaries,
    output:
        table=report(
            f"{RESULTS}/{{uc}}/campaigns/summary.tsv",
            caption="report/campaign_summary.rst",
            category="{uc}",
            subcategory="Campaigns",
            labels={"use case": "{uc}", "figure": "counts per class per campaign"},
        ),
        plot=report(
            f"{RESULTS}/{{uc}}/campaigns/per_class_per_campaign.png",
            caption="report/campaign_summary.rst",
            category="{uc}",
            subcategory="Campaigns",
            labels={"use case": "{uc}", "figure": "counts per class per campaign (plot)"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/campaign_summary.log",
    conda:
        "../envs/data.yaml"
    params:
        campaigns=lambda wc: campaigns(wc.uc),
    script:
        "../scripts/campaign_summary.py"
