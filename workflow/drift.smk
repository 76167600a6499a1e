# Drift monitoring: a reference built with the model, one drift test per campaign, the on_drift
# policy, and one MLflow run per campaign inference. Every task: classifiers test embeddings, image
# statistics and predicted classes; detectors (detect, segment, obb) image statistics and detections
# per class per image; sound the windows' embeddings and predicted classes (drift_reference_sound).
for _uc, _cfg in UC.items():
    if not drift_enabled(_cfg):
        continue
    if _cfg["task"] == "classify" and not _cfg["inference"]["embeddings"]:
        raise WorkflowError(
            f"use case {_uc}: drift.enabled needs inference.embeddings: true "
            "(the drift test compares penultimate-layer embeddings and image statistics)"
        )
    if _cfg["task"] == "classify" and not has_labels(_uc):
        raise WorkflowError(
            f"use case {_uc}: drift.enabled needs a dataset (source + dataset): "
            "the drift reference is drawn from its prepared images"
        )
    if _cfg["task"] != "classify" and "source" not in _cfg:
        raise WorkflowError(
            f"use case {_uc}: drift.enabled needs labelled data (source + detection.data, or "
            "source + sound.data for sound): the drift reference is the model run on them"
        )
    if is_sound(_cfg) and not _cfg["sound"]["inference"]["embeddings"]:
        raise WorkflowError(
            f"use case {_uc}: drift.enabled needs sound.inference.embeddings: true "
            "(the drift test compares the windows' embeddings with the reference's)"
        )


# Embeddings, image statistics and predicted classes of a sample of the training images.
rule drift_reference:
    input:
        raw=dataset_root,
        manifest=rules.prepare.output.manifest,
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
        uc=ucs_where(lambda cfg: drift_enabled(cfg) and cfg["task"] == "classify"),
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=4000,
        runtime=60,
    params:
        settings=drift_reference_settings,
        mlflow=mlflow_settings,
    script:
        "../scripts/drift_reference.py"


# Image statistics and detections per class of a sample of a detector's training images.
rule drift_reference_detect:
    input:
        data=f"{RESULTS}/{{uc}}/detect/data",
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
        uc=ucs_where(lambda cfg: drift_enabled(cfg) and is_detection(cfg)),
    conda:
        "../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
        mem_mb=6000,
        runtime=60,
    params:
        drift=drift_sample_settings,
        settings=detection_prediction,
        ultralytics=f"{RESULTS}/{{uc}}/detect/ultralytics",
        mlflow=mlflow_settings,
    script:
        "../scripts/drift_reference_detect.py"


rule drift:
    input:
        predictions=drift_table,  # classifiers: predictions; detectors: the per-image counts
        reference=f"{RESULTS}/{{uc}}/model/drift_reference.npz",
    output:
        json=f"{CAMPAIGN}/drift/drift.json",
        table=report(
            f"{CAMPAIGN}/drift/drift.tsv",
            caption="report/drift_table.rst",
            category="{uc}",
            subcategory="Campaign {campaign}",
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "drift tests"},
        ),
        plot=report(
            f"{CAMPAIGN}/drift/driftwatch.png",
            caption="report/driftwatch.rst",
            category="{uc}",
            subcategory="Campaign {campaign}",
            labels={"use case": "{uc}", "campaign": "{campaign}", "figure": "DriftWatch"},
        ),
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/drift.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/{{campaign}}/drift.tsv"
    conda:
        "../envs/torch.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        drift=drift_settings,
    script:
        "../scripts/drift.py"


# The on_drift policy: fail stops the workflow naming the drifted batches, warn lets it go on.
rule drift_check:
    input:
        rules.drift.output.json,
    output:
        f"{CAMPAIGN}/drift/policy.json",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/drift_check.log",
    conda:
        "../envs/data.yaml"
    params:
        on_drift=lambda wc: UC[wc.uc]["drift"]["on_drift"],
    script:
        "../scripts/drift_check.py"


# One MLflow run per campaign inference: model version, counts, throughput, drift summary.
rule track_inference:
    input:
        summary=f"{CAMPAIGN}/summary.json",
        card=model_card,
        drift=campaign_drift,
    output:
        f"{CAMPAIGN}/mlflow_run.json",
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/track_inference.log",
    conda:
        "../envs/torch.yaml"
    params:
        mlflow=mlflow_settings,
    script:
        "../scripts/track_inference.py"
