# Decode-once cache of the prepared images at the model's input size (training.cache: true).
rule cache_images:
    input:
        raw=dataset_root,
        manifest=rules.prepare.output.manifest,
    output:
        cache=f"{RESULTS}/{{uc}}/prepared/images_{{size}}px.npy",
        index=f"{RESULTS}/{{uc}}/prepared/images_{{size}}px.json",
    log:
        f"{RESULTS}/{{uc}}/logs/cache_images_{{size}}px.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/cache_images_{{size}}px.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: trains(cfg) and backend(cfg) == "torch"),
        size=r"\d+",
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=240,
    params:
        images=images_folder,
    script:
        "../scripts/cache_images.py"


rule train:
    input:
        raw=dataset_root,
        manifest=rules.prepare.output.manifest,
        classes=rules.prepare.output.classes,
        pretrained=pretrained_weights,
        cache=training_cache(".npy"),
        cache_index=training_cache(".json"),
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.safetensors",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
        history=f"{RESULTS}/{{uc}}/model/history.tsv",
        curve=report(
            f"{RESULTS}/{{uc}}/model/training_curve.png",
            caption="report/training_curve.rst",
            category="{uc}",
            subcategory="Training",
            labels={"use case": "{uc}", "figure": "training curve"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/train.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/train.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: trains(cfg) and backend(cfg) == "torch"),
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        settings=with_limits(training_settings),
        mlflow=mlflow_settings,
    script:
        "../scripts/train.py"


# A model trained elsewhere (path, package, MLflow registry): copied in, card and hash checked.
rule import_model:
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.safetensors",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
    log:
        f"{RESULTS}/{{uc}}/logs/import_model.log",
    wildcard_constraints:
        uc=ucs_where(lambda cfg: not trains(cfg) and backend(cfg) in IMPORTED_SAFETENSORS),
    conda:
        "../envs/torch.yaml"
    params:
        source=model_source,
        mlflow=mlflow_settings,
    script:
        "../scripts/import_model.py"
