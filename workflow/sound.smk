# Underwater sound (task sound): recordings -> windows -> a CNN on log-mel spectrograms or a CLAP
# audio tower + head -> vessel class and ordinal distance bin per window -> per-file and per-hour
# tables. Campaign inputs come from infer_inputs (task-agnostic); shards, gather, MLflow runs
# (track_inference) and the RO-Crate are the engine's. A given model (model.source path | package |
# mlflow) comes in through import_sound_model instead of train_sound. sound_gather wins over infer_gather (ruleorder).


ruleorder: sound_gather > infer_gather


rule train_sound:
    input:
        raw=f"{RESOURCES}/{{uc}}/raw",
        clap=sound_clap_folder,  # backend clap: the local CLAP checkpoint
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.safetensors",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
        history=f"{RESULTS}/{{uc}}/model/history.tsv",
        metrics=f"{RESULTS}/{{uc}}/eval/metrics.json",
        curve=report(
            f"{RESULTS}/{{uc}}/model/training_curve.png",
            caption="report/training_curve.rst",
            category="{uc}",
            subcategory="Training",
            labels={"use case": "{uc}", "figure": "training curve"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/train_sound.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/train_sound.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: is_sound(cfg) and trains(cfg)),
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=480,
    params:
        settings=sound_training,
        work=f"{RESULTS}/{{uc}}/sound/train",
        mlflow=mlflow_settings,
    script:
        "../scripts/sound_train.py"


# A sound model trained elsewhere (model.source path | package | mlflow): copied in, its card a sound
# model's of sound.backend, a clap model's audio tower (clap/) with it. Like import_model: runs on
# the host that sees the given path / registry; jobs read the copy.
localrules:
    import_sound_model,


rule import_sound_model:
    input:
        given=given_model_card,
    output:
        weights=f"{RESULTS}/{{uc}}/model/model.safetensors",
        card=f"{RESULTS}/{{uc}}/model/model_card.json",
    log:
        f"{RESULTS}/{{uc}}/logs/import_sound_model.log",
    wildcard_constraints:
        uc=ucs_where(lambda cfg: is_sound(cfg) and not trains(cfg)),
    conda:
        "../envs/torch.yaml"
    params:
        source=model_source,
        backend=lambda wc: UC[wc.uc]["sound"]["backend"],
        mlflow=mlflow_settings,
    script:
        "../scripts/import_sound_model.py"


rule sound_shard:
    input:
        inputs=shard_table,  # inputs.parquet, or the shard's staged bundle (workflow/staging.smk)
        weights=model_weights,
        card=model_card,
    output:
        predictions=f"{CAMPAIGN}/shards/{{scatteritem}}.parquet",
        rejected=f"{CAMPAIGN}/rejected_shards/{{scatteritem}}.parquet",
        summary=f"{CAMPAIGN}/summaries/{{scatteritem}}.json",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/sound_shard/{{scatteritem}}.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/{{campaign}}/sound_shard/{{scatteritem}}.tsv"
    wildcard_constraints:
        uc=SOUND_UCS,
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=240,
    params:
        settings=sound_inference,
    script:
        "../scripts/sound_shard.py"


# The drift reference of a sound model: windows of its training recordings through a sound shard
# (embeddings and predicted classes); the campaign drift test is the common rule drift.
rule drift_reference_sound:
    input:
        raw=f"{RESOURCES}/{{uc}}/raw",
        weights=model_weights,
        card=model_card,
    output:
        reference=f"{RESULTS}/{{uc}}/model/drift_reference.npz",
        summary=f"{RESULTS}/{{uc}}/model/drift_reference.json",
    log:
        f"{RESULTS}/{{uc}}/logs/drift_reference.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/drift_reference.tsv"
    wildcard_constraints:
        uc=ucs_where(lambda cfg: drift_enabled(cfg) and is_sound(cfg)),
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=120,
    params:
        settings=sound_drift_reference,
        mlflow=mlflow_settings,
    script:
        "../scripts/drift_reference_sound.py"


rule sound_gather:
    input:
        inputs=f"{CAMPAIGN}/inputs.parquet",
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
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "sound summary"},
        ),
        per_file=f"{CAMPAIGN}/per_file.parquet",
        per_hour=f"{CAMPAIGN}/per_hour.parquet",
        per_file_tsv=report(
            f"{CAMPAIGN}/per_file.tsv",
            caption="report/sound_tables.rst",
            category="{uc}",
            subcategory="Campaign {campaign}",
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "per file"},
        ),
        per_hour_tsv=report(
            f"{CAMPAIGN}/per_hour.tsv",
            caption="report/sound_tables.rst",
            category="{uc}",
            subcategory="Campaign {campaign}",
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "per hour"},
        ),
        spectrograms=report(
            directory(f"{CAMPAIGN}/spectrograms"),
            patterns=["{name}.png"],
            caption="report/sound_spectrograms.rst",
            category="{uc}",
            subcategory="Campaign {campaign}",
            labels={"use case": "{uc}", "campaign": "{campaign}", "window": "{name}"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/sound_gather.log",
    wildcard_constraints:
        uc=SOUND_UCS,
    conda:
        "../envs/torch.yaml"
    params:
        absent=lambda wc: UC[wc.uc]["sound"]["absent_class"],
        classes=lambda wc: UC[wc.uc]["sound"]["classes"],
        spectrograms=lambda wc: UC[wc.uc]["sound"]["spectrograms"],
    script:
        "../scripts/sound_gather.py"
