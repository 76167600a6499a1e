rule train:
    input:
        raw=dataset_root,
        manifest=rules.prepare.output.manifest,
        classes=rules.prepare.output.classes,
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.safetensors",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
        history=f"{RESULTS}/{{uc}}/model/history.tsv",
    log:
        f"{RESULTS}/{{uc}}/logs/train.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/train.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        usecase=uc_config,
        mlflow=mlflow_settings,
    script:
        "../scripts/train.py"
