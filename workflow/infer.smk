rule infer_inputs:
    input:
        raw=dataset_root,
    output:
        f"{RESULTS}/{{uc}}/predictions/inputs.parquet",
    log:
        f"{RESULTS}/{{uc}}/logs/infer_inputs.log",
    conda:
        "../envs/data.yaml"
    params:
        usecase=uc_config,
    script:
        "../scripts/infer_inputs.py"


rule infer_shard:
    input:
        inputs=rules.infer_inputs.output[0],
        weights=rules.train.output.weights,
        card=rules.train.output.card,
    output:
        predictions=f"{RESULTS}/{{uc}}/predictions/shards/{{scatteritem}}.parquet",
        rejected=f"{RESULTS}/{{uc}}/predictions/rejected_shards/{{scatteritem}}.parquet",
        summary=f"{RESULTS}/{{uc}}/predictions/summaries/{{scatteritem}}.json",
    log:
        f"{RESULTS}/{{uc}}/logs/infer_shard/{{scatteritem}}.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/infer_shard/{{scatteritem}}.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=120,
    params:
        inference=uc_section("inference"),
    script:
        "../scripts/infer_shard.py"


rule infer_gather:
    input:
        predictions=shard_files("shards", "parquet"),
        rejected=shard_files("rejected_shards", "parquet"),
        summaries=shard_files("summaries", "json"),
    output:
        predictions=f"{RESULTS}/{{uc}}/predictions/predictions.parquet",
        rejected=f"{RESULTS}/{{uc}}/predictions/rejected.parquet",
        dataset=directory(f"{RESULTS}/{{uc}}/predictions/dataset"),
        summary=f"{RESULTS}/{{uc}}/predictions/summary.json",
        table=report(
            f"{RESULTS}/{{uc}}/predictions/summary.tsv",
            caption="report/inference_summary.rst",
            category="{uc}",
            subcategory="Predictions",
            labels={"use case": "{uc}", "figure": "inference summary"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/infer_gather.log",
    conda:
        "../envs/data.yaml"
    script:
        "../scripts/infer_gather.py"
