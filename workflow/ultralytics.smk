# Ultralytics checkpoints (.pt): a classifier trained here (task classify, model.backend ultralytics)
# and given checkpoints of every task (classify, detect, segment, obb), their task read from the
# checkpoint and checked against the use case's. Evaluation, campaign shards, exports and drift of
# classifiers are the common classification rules: model_weights() names model.pt for these use
# cases and aquaflow.backends.load_predictor dispatches on the card's backend.


# Like import_model: runs on the host that sees the given path / registry; jobs read the copy.
localrules:
    import_ultralytics_model,


rule import_ultralytics_model:
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.pt",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
    log:
        f"{RESULTS}/{{uc}}/logs/import_ultralytics_model.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/import_ultralytics_model.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: not trains(cfg) and backend(cfg) == "ultralytics"),
    conda:
        "../envs/torch.yaml"
    resources:
        mem_mb=4000,
    params:
        source=model_source,
        task=uc_section("task"),
        mlflow=mlflow_settings,
        ultralytics=f"{RESULTS}/{{uc}}/ultralytics/settings",
    script:
        "../scripts/import_ultralytics_model.py"


rule train_yolo_classify:
    input:
        raw=dataset_root,
        manifest=rules.prepare.output.manifest,
        pretrained=pretrained_weights,
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.pt",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
        history=f"{RESULTS}/{{uc}}/model/history.tsv",
        curve=report(
            f"{RESULTS}/{{uc}}/model/training_curve.png",
            caption="report/yolo_classify_training_curve.rst",
            category="{uc}",
            subcategory="Training",
            labels={"use case": "{uc}", "figure": "training curve"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/train_yolo_classify.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/train_yolo_classify.tsv"
    wildcard_constraints:
        uc=ucs_where(
            lambda cfg: trains(cfg) and cfg["task"] == "classify" and backend(cfg) == "ultralytics"
        ),
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        settings=training_settings,
        work=f"{RESULTS}/{{uc}}/ultralytics/train",
        ultralytics=f"{RESULTS}/{{uc}}/ultralytics/settings",
        mlflow=mlflow_settings,
    script:
        "../scripts/train_yolo_classify.py"
