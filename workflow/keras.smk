# Keras/TensorFlow backend, for use cases with model.backend: keras.
# import_keras_model: a given .keras/.h5 model (with its model_card.json) or a planktonclas model
# folder -> model/model.keras + model_card.json. train_keras: fine-tune a keras.applications backbone.
# Bulk inference and evaluation use the common rules: model_weights() names model.keras for these
# use cases and aquaflow.backends.load_predictor dispatches on the card's backend.


# Like import_model: runs on the host that sees the given path / registry; jobs read the copy.
localrules:
    import_keras_model,


rule import_keras_model:
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.keras",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
    log:
        f"{RESULTS}/{{uc}}/logs/import_keras_model.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/import_keras_model.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: not trains(cfg) and backend(cfg) == "keras"),
    conda:
        "../envs/keras.yaml"
    resources:
        mem_mb=4000,
    params:
        source=keras_model_source,
        mlflow=mlflow_settings,
    script:
        "../scripts/import_keras_model.py"


rule train_keras:
    input:
        raw=dataset_root,
        manifest=rules.prepare.output.manifest,
        classes=rules.prepare.output.classes,
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.keras",
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
        f"{RESULTS}/{{uc}}/logs/train_keras.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/train_keras.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: trains(cfg) and backend(cfg) == "keras"),
    conda:
        "../envs/keras.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=240,
    params:
        settings=training_settings,
        mlflow=mlflow_settings,
    script:
        "../scripts/train_keras.py"
