# Input functions and config loading only; rules live in the other .smk files. Grouped by stage.
import sys
from pathlib import Path

sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from aquaflow.config import ConfigError, load_workflow_config  # noqa: E402
from aquaflow.data import limits as input_limits  # noqa: E402
from snakemake.exceptions import WorkflowError  # noqa: E402
from snakemake_interface_executor_plugins.settings import SharedFSUsage  # noqa: E402

try:
    CONFIG, UC = load_workflow_config(config, Path(workflow.basedir) / "workflow" / "schemas")
except ConfigError as err:
    raise WorkflowError(str(err)) from None

RESULTS = CONFIG["results"]
RESOURCES = CONFIG["resources"]
ENVS = Path(workflow.basedir) / "envs"
# Weights file of a model, by backend; the card is always model/model_card.json.
MODEL_FILE = {"torch": "model.safetensors", "keras": "model.keras", "ultralytics": "model.pt"}
MODEL_FILE |= {"sound_cnn": "model.safetensors", "clap": "model.safetensors"}  # task sound
MODEL_FILE |= {"smp": "model.safetensors"}  # task semantic
# Backends whose given models rule import_model copies in (model.safetensors + model_card.json).
IMPORTED_SAFETENSORS = {"torch", "smp"}
NEVER = "(?!)"  # a regex that matches nothing: the constraint of a rule no use case needs
CAMPAIGN = f"{RESULTS}/{{uc}}/campaigns/{{campaign}}"  # a campaign's output folder (pattern)


wildcard_constraints:
    uc="|".join(UC) or NEVER,
    campaign="[A-Za-z0-9][A-Za-z0-9_.-]*",


# --- Use cases: which rules serve which use case ----------------------------------------------


def ucs_where(predicate):
    """A regex matching exactly the use cases whose config satisfies predicate (for per-rule
    wildcard_constraints, so backend-specific rules never compete for the same file)."""
    names = [uc for uc, cfg in UC.items() if predicate(cfg)]
    return "|".join(names) or NEVER


def campaigns(uc):
    return list(UC[uc]["campaigns"])


def trains(cfg):
    return cfg["model"]["source"] == "train"


def backend(cfg):
    if is_sound(cfg):
        return cfg["sound"]["backend"]
    if cfg["task"] == "semantic":
        return "smp"
    if cfg["task"] != "classify":
        return "ultralytics"
    return cfg["model"].get("backend", "torch")


def is_detection(cfg):
    return cfg.get("task", "classify") in {"detect", "segment", "obb"}


DETECT_UCS = ucs_where(is_detection)


def has_labels(uc):
    """Labelled data to evaluate on: the use case describes a dataset."""
    return "dataset" in UC[uc] and "source" in UC[uc]


def has_preprocess(uc):
    return bool(UC[uc]["preprocess"]["steps"])


def drift_enabled(cfg):
    return cfg["drift"]["enabled"]


def has_dwca(uc, campaign):
    cfg = UC[uc]
    return cfg["export"]["dwca"]["enabled"] and bool(cfg["campaigns"][campaign]["samples"]["path"])


def staging():
    """True when jobs share no file system with this host (decided at DAG time, so the
    executor's own setting, e.g. Kubernetes', counts)."""
    return SharedFSUsage.INPUT_OUTPUT not in workflow.storage_settings.shared_fs_usage


# --- Config slices (a rule's params carry only what it reads) ---------------------------------


def uc_section(section):
    """An input function returning one section of the use case config."""

    def get(wildcards):
        return UC[wildcards.uc][section]

    return get


def limit_settings(uc, keys=input_limits.IMAGE_KEYS):
    """The `limits` keys read by a step (the image limits; fetch: input_limits.ARCHIVE_KEYS) when one
    differs from its default: {} at the defaults, so upgrading reruns nothing and changing a limit
    reruns the rules that read it."""
    cfg = {k: UC[uc]["limits"][k] for k in keys}
    default = input_limits.defaults()
    return {"limits": cfg} if any(cfg[k] != default[k] for k in keys) else {}


def with_limits(get, keys=input_limits.IMAGE_KEYS):
    """A params function `get` (a dict) with the use case's changed `limits` (`keys`) added to it."""

    def params(wildcards):
        return {**get(wildcards), **limit_settings(wildcards.uc, keys)}

    return params


def opt_outs(uc):
    """The safety defaults the use case switched off or changed, by config key ({} at the
    defaults): allow_paths_outside_root, model.safe_mode, limits."""
    cfg = UC[uc]
    out = dict(limit_settings(uc))
    if cfg["allow_paths_outside_root"]:
        out["allow_paths_outside_root"] = True
    if cfg["model"].get("safe_mode") is False:
        out["safe_mode"] = False
    return out


def with_opt_outs(get):
    """A params function `get` (a dict, or a list of dicts) with the use case's switched-off safety
    defaults added to it: only when switched off, so a run at the defaults keeps the params it
    had (upgrading reruns nothing) and switching one off reruns what reads it."""

    def params(wildcards):
        value, extra = get(wildcards), opt_outs(wildcards.uc)
        if not extra:
            return value
        if isinstance(value, list):
            return [{**item, **extra} for item in value]
        return {**value, **extra}

    return params


def uc_model_section(key):
    """An input function returning UC[uc]["model"][key] (a narrow params slice)."""

    def get(wildcards):
        return UC[wildcards.uc]["model"][key]

    return get


def campaign_section(key):
    """An input function returning one key of a campaign's config."""

    def get(wildcards):
        return UC[wildcards.uc]["campaigns"][wildcards.campaign][key]

    return get


def mlflow_settings(wildcards):
    return {**CONFIG["mlflow"], "results": RESULTS}


# --- Data: fetch, preprocess, prepare ---------------------------------------------------------


def dataset_root(wildcards):
    """Where prepare, train, evaluate and infer_inputs find images: the preprocess output folder
    when the use case has preprocess steps, else the fetched source."""
    if has_preprocess(wildcards.uc):
        return f"{RESULTS}/{wildcards.uc}/preprocessed"
    return f"{RESOURCES}/{wildcards.uc}/raw"


def images_folder(wildcards):
    """The dataset's `images` folder setting (where class folders / EcoTaxa images sit)."""
    return UC[wildcards.uc].get("dataset", {}).get("images", ".")


def campaign_raw(wildcards):
    """The dataset folder, for campaigns that predict the use case's own images."""
    kinds = {i["kind"] for i in UC[wildcards.uc]["campaigns"][wildcards.campaign]["inputs"]}
    return dataset_root(wildcards) if kinds & {"dataset", "preprocessed"} else []


def pretrained_weights(wildcards):
    """The fetched pretrained weights of a use case (rule fetch_pretrained), or [] for random init."""
    from aquaflow.backends.pretrained import file_name

    spec = UC[wildcards.uc]["model"]["pretrained"]
    if not spec:
        return []
    return f"{RESOURCES}/{wildcards.uc}/pretrained/{file_name(spec)}"


# --- Model: train or import, evaluate ---------------------------------------------------------


# Training at scale: compute keys of `training` (loader workers, decode-once cache, DDP).
TRAINING_COMPUTE_DEFAULTS = {"num_workers": None, "cache": False, "distributed": False}


def training_params(training):
    """`training` without its compute keys left at their defaults (workers from the rule's threads,
    no cache): switching one on reruns training, a run at the defaults keeps its params."""
    return {
        k: v
        for k, v in training.items()
        if k not in TRAINING_COMPUTE_DEFAULTS or v != TRAINING_COMPUTE_DEFAULTS[k]
    }


def training_cache(suffix):
    """An input function: the decode-once image cache training reads (rule cache_images; `.npy`
    the pixels, `.json` its index), or [] when off."""

    def get(wildcards):
        cfg = UC[wildcards.uc]
        if not cfg["training"]["cache"]:
            return []
        return f"{RESULTS}/{wildcards.uc}/prepared/images_{cfg['model']['input_size']}px{suffix}"

    return get


def model_weights(wildcards):
    return f"{RESULTS}/{wildcards.uc}/model/{MODEL_FILE[backend(UC[wildcards.uc])]}"


def model_card(wildcards):
    return f"{RESULTS}/{wildcards.uc}/model/model_card.json"


def training_settings(wildcards):
    """What training reads: images folder, model architecture settings, training settings.
    Model-source keys, descriptions, inference and export settings are left out on purpose."""
    cfg = UC[wildcards.uc]
    given = {"source", "path", "package", "subdir", "uri", "sha256"}
    return {
        "images": images_folder(wildcards),
        "model": {k: v for k, v in cfg["model"].items() if k not in given},
        "training": training_params(cfg["training"]),
        "data": {k: v for k, v in cfg["source"].items() if k not in ("license", "citation")},
    }


def model_source(wildcards):
    given = ("source", "path", "package", "subdir", "uri", "sha256")
    return {k: UC[wildcards.uc]["model"].get(k) for k in given}


def keras_model_source(wildcards):
    """Where the given model comes from, plus the explicit safe_mode opt-out (nothing else)."""
    return {**model_source(wildcards), "safe_mode": UC[wildcards.uc]["model"]["safe_mode"]}


def evaluation_settings(wildcards):
    cfg = UC[wildcards.uc]
    return {
        **cfg["evaluation"],
        "intervals": cfg["intervals"],
        "images": images_folder(wildcards),
        "device": cfg["inference"]["device"],
        **opt_outs(wildcards.uc),  # safe_mode from the config, never from the model card
    }


def detection_task(wildcards):
    return UC[wildcards.uc]["task"]


def detection_section(key):
    """An input function returning one key of the use case's `detection` section."""

    def get(wildcards):
        return UC[wildcards.uc]["detection"][key]

    return get


def detection_training(wildcards):
    d = UC[wildcards.uc]["detection"]
    return {"model": d["model"], "imgsz": d["imgsz"], "train": d["train"]}


def detection_evaluation(wildcards):
    d = UC[wildcards.uc]["detection"]
    return {
        "imgsz": d["imgsz"],
        "predict": d["predict"],
        "evaluate": d["evaluate"],
        "intervals": UC[wildcards.uc]["intervals"],
    }


# --- Campaigns: inputs, staging, shards, gather -----------------------------------------------


def detection_prediction(wildcards):
    d = UC[wildcards.uc]["detection"]
    return {**d["predict"], "imgsz": d["imgsz"], "pixel_size": d["pixel_size"]}


def shard_files(kind, ext):
    """All shard outputs of one kind (shards, rejected_shards, summaries) of a campaign."""

    def get(wildcards):
        base = f"{RESULTS}/{wildcards.uc}/campaigns/{wildcards.campaign}"
        return gather.infer(f"{base}/{kind}/{{scatteritem}}.{ext}")

    return get


def detect_shard_files(kind, ext):
    def get(wildcards):
        base = CAMPAIGN.format(uc=wildcards.uc, campaign=wildcards.campaign)
        return gather.infer(f"{base}/{kind}/{{scatteritem}}.{ext}")

    return get


def shard_table(wildcards):
    """What a shard reads its rows from: its staged bundle, or the campaign's input table."""
    base = f"{RESULTS}/{wildcards.uc}/campaigns/{wildcards.campaign}"
    if staging():
        return f"{base}/staged/{wildcards.scatteritem}.zip"
    return f"{base}/inputs.parquet"


def staged_bundles(wildcards):
    """Every staged bundle of a campaign (the images of its exports), or none."""
    if not staging():
        return []
    base = f"{RESULTS}/{wildcards.uc}/campaigns/{wildcards.campaign}"
    return gather.infer(f"{base}/staged/{{scatteritem}}.zip")


def campaign_summaries(wildcards):
    return [f"{RESULTS}/{wildcards.uc}/campaigns/{c}/summary.json" for c in campaigns(wildcards.uc)]


def campaign_tables(wildcards):
    """The tables a campaign's exports read: its predictions, plus a detection campaign's counts
    per image (every predicted image: the events and the area a cover is measured against)."""
    base = CAMPAIGN.format(uc=wildcards.uc, campaign=wildcards.campaign)
    out = {"predictions": f"{base}/predictions.parquet"}
    if is_detection(UC[wildcards.uc]):
        out["counts"] = f"{base}/counts.parquet"
    if is_semantic(UC[wildcards.uc]):  # one row per raster with its pixels per class
        out["counts"] = out["predictions"]
    return out


# --- Monitoring: drift and MLflow inference runs ----------------------------------------------


def drift_settings(wildcards):
    """What the drift test reads: the drift section without the on_drift policy (a policy change
    reruns only drift_check) and without the reference settings (they shape the reference file)."""
    cfg = UC[wildcards.uc]["drift"]
    return {k: v for k, v in cfg.items() if k not in ("on_drift", "enabled", "reference")}


def drift_reference_settings(wildcards):
    cfg = UC[wildcards.uc]
    return {
        "reference": cfg["drift"]["reference"],
        "pca_components": cfg["drift"]["pca_components"],
        "seed": cfg["drift"]["seed"],
        "images": images_folder(wildcards),
        "device": cfg["inference"]["device"],
        **opt_outs(wildcards.uc),  # safe_mode from the config, never from the model card
    }


def drift_sample_settings(wildcards):
    """What a detector's (semantic model's) drift reference reads of the drift section: which images
    (rasters), the seed."""
    return {k: UC[wildcards.uc]["drift"][k] for k in ("reference", "seed")}


def drift_table(wildcards):
    """The per-image table the drift test reads: a classifier's predictions (embeddings and image
    statistics included), a detector's per-image counts (image statistics included)."""
    name = "counts" if is_detection(UC[wildcards.uc]) else "predictions"
    return f"{RESULTS}/{wildcards.uc}/campaigns/{wildcards.campaign}/{name}.parquet"


def campaign_drift(wildcards):
    """The campaign's drift.json when drift monitoring is on (for the MLflow inference run)."""
    if drift_enabled(UC[wildcards.uc]):
        return f"{RESULTS}/{wildcards.uc}/campaigns/{wildcards.campaign}/drift/drift.json"
    return []


# --- Exports: EcoTaxa, Darwin Core Archive, RO-Crate ------------------------------------------


def ecotaxa_settings(wildcards):
    cfg = UC[wildcards.uc]
    return {
        **cfg["export"]["ecotaxa"],
        "top_k": cfg["inference"]["top_k"],
        "instrument": cfg["instrument"],
        "metadata": cfg["campaigns"][wildcards.campaign]["metadata"],
        "default_sample_id": f"{wildcards.uc}_{wildcards.campaign}",
        "sample_column": cfg["campaigns"][wildcards.campaign]["samples"]["column"],
        "objects": objects_settings(wildcards),
    }


def ecotaxa_samples(wildcards):
    """The campaign's samples table, when it has one: each object's sample_id, position and date."""
    path = samples_table(wildcards)
    return {"samples": path} if path else {}


def campaign_sample_id(wildcards):
    """The campaign's sample id: metadata.sample_id, else <uc>_<campaign>."""
    metadata = UC[wildcards.uc]["campaigns"][wildcards.campaign]["metadata"]
    return str(metadata.get("sample_id") or f"{wildcards.uc}_{wildcards.campaign}")


def objects_settings(wildcards):
    """What decides the rows of every export (aquaflow.tasks.objects): a classifier's predictions
    as they are; a detection campaign's detections with the sample column, the campaign's sample id
    and detection.pixel_size (nothing else, so other edits rerun no export); a semantic campaign's
    classes per raster with the sample column and id."""
    cfg = UC[wildcards.uc]
    if is_semantic(cfg):
        return {
            "task": "semantic",
            "sample_column": cfg["campaigns"][wildcards.campaign]["samples"]["column"],
            "default_sample": campaign_sample_id(wildcards),
        }
    if not is_detection(cfg):
        return {"task": "classify"}
    return {
        "task": cfg["task"],
        "sample_column": cfg["campaigns"][wildcards.campaign]["samples"]["column"],
        "default_sample": campaign_sample_id(wildcards),
        "pixel_size": cfg["detection"]["pixel_size"],
    }


def taxonomy_table(wildcards):
    path = UC[wildcards.uc]["export"]["dwca"]["taxonomy"]
    return path or f"config/taxonomy/{wildcards.uc}.tsv"


def samples_table(wildcards):
    """The campaign's samples table: its configured path, or, when jobs share no file system with
    this host, the copy rule stage_samples puts into the results (storage)."""
    path = UC[wildcards.uc]["campaigns"][wildcards.campaign]["samples"]["path"]
    if path and staging():
        return f"{RESULTS}/{wildcards.uc}/campaigns/{wildcards.campaign}/samples_table.csv"
    return path


def samples_source(wildcards):
    """The configured samples table and its SHA-256 (an edit of the file reruns the copy)."""
    from aquaflow.io import sha256_file

    path = UC[wildcards.uc]["campaigns"][wildcards.campaign]["samples"]["path"]
    return {"path": path, "sha256": sha256_file(path)}


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
        "default_sample": campaign_sample_id(wildcards),
        "package_id": f"{wildcards.uc}_{wildcards.campaign}",
    }


def dwca_zip(uc, campaign):
    return f"{RESULTS}/{uc}/campaigns/{campaign}/export/dwca_{uc}_{campaign}.zip"


def rocrate_products(wildcards):
    """The campaign's exports that exist in this configuration (outputs of the run, in the crate)."""
    uc, campaign = wildcards.uc, wildcards.campaign
    base = f"{RESULTS}/{uc}/campaigns/{campaign}"
    out = {}
    if UC[uc]["export"]["ecotaxa"]["enabled"] and not is_semantic(UC[uc]):  # no objects
        out["ecotaxa"] = f"{base}/export/ecotaxa_{uc}_{campaign}.tsv"
    if has_dwca(uc, campaign):
        out["dwca"] = dwca_zip(uc, campaign)
        out["dwca_report"] = f"{base}/export/dwca_{uc}_{campaign}.json"
        out["samples"] = samples_table(wildcards)
        out["taxonomy"] = taxonomy_table(wildcards)
    if is_detection(UC[uc]):  # the detection outputs of workflow/detect.smk
        out["counts"] = f"{base}/counts.parquet"
        out["coco"] = f"{base}/detections.json"
        out["coco_images"] = f"{base}/coco_images.json"
    return out


def provenance_config(wildcards):
    """The validated config that made this campaign's results (defaults filled): everything but
    descriptions and the other campaigns, so that editing those reruns nothing."""
    cfg = UC[wildcards.uc]
    out = {k: v for k, v in cfg.items() if k not in ("description", "campaigns")}
    campaign = cfg["campaigns"][wildcards.campaign]
    out["campaign"] = {
        "name": wildcards.campaign,
        **{k: v for k, v in campaign.items() if k != "description"},
    }
    return out


# --- Task sound: training and inference settings, targets (workflow/sound.smk) ----------------


def is_sound(cfg):
    return cfg.get("task") == "sound"


SOUND_UCS = ucs_where(is_sound)


def sound_clap_folder(wildcards):
    """The local CLAP checkpoint a clap model is trained on ([] for the CNN)."""
    s = UC[wildcards.uc]["sound"]
    return s["clap"]["path"] if s["backend"] == "clap" else []


def sound_training(wildcards):
    """What train_sound reads: the sound section without inference, report and occupancy keys,
    and the interval settings of its test figures."""
    s = UC[wildcards.uc]["sound"]
    kept = {k: v for k, v in s.items() if k not in ("inference", "spectrograms", "absent_class")}
    return {**kept, "intervals": UC[wildcards.uc]["intervals"]}


def sound_inference(wildcards):
    """What a sound shard reads: sound.inference and the campaign-side window settings (hop,
    channel, tail, blocks, file-name pattern; rate and window length are the model's)."""
    s = UC[wildcards.uc]["sound"]
    keep = ("hop_s", "channel", "tail", "block_s", "name_pattern")
    return {**s["inference"], "audio": {k: s["audio"][k] for k in keep}}


def given_model_card(wildcards):
    """A given model's card on disk (model.source path): an input of its import, so a new card
    reimports it and a model this run writes is imported after it is written; [] otherwise."""
    model = UC[wildcards.uc]["model"]
    if model["source"] != "path":
        return []
    path = Path(model["path"])
    return str(path) if path.suffix == ".json" else str(path / "model_card.json")


def sound_drift_reference(wildcards):
    """What the sound drift reference reads: labelled recordings (data, truth), drift reference
    settings, the shards' window settings and device (its windows are a campaign's)."""
    s, d = UC[wildcards.uc]["sound"], UC[wildcards.uc]["drift"]
    shard = sound_inference(wildcards)
    return {
        "data": s["data"],
        "truth": s["truth"],
        **{k: d[k] for k in ("reference", "pca_components", "seed")},
        "audio": shard["audio"],
        "device": shard["device"],
    }


def sound_targets(uc):
    base = f"{RESULTS}/{uc}"
    out = [f"{base}/model/model_card.json"]
    if trains(UC[uc]):
        out += [f"{base}/model/training_curve.png", f"{base}/eval/metrics.json"]
    if campaigns(uc):
        out.append(f"{base}/campaigns/summary.tsv")
    for campaign in campaigns(uc):
        c = f"{base}/campaigns/{campaign}"
        out += [
            f"{c}/predictions.parquet",
            f"{c}/per_file.tsv",
            f"{c}/per_hour.tsv",
            f"{c}/spectrograms",
        ]
        out += tracking_targets(uc, campaign)  # MLflow inference run (+ drift when enabled)
    return out


# --- ZooScan multiples: the separate step's report figure (workflow/multiples.smk) -------------


def separates(cfg):
    return "separate" in cfg["preprocess"]["steps"]


def separator_model(wildcards):
    """The given instance model folder (Mask2Former or Ultralytics segment) of a use case whose `separate` step uses a model, else none."""
    cut = UC[wildcards.uc]["preprocess"]["separate"]
    return cut["model"] if separates(UC[wildcards.uc]) and cut["method"] == "model" else []


def scorer_model(wildcards):
    """The given multiple classifier folder of a use case whose `separate` step scores with it, else none."""
    cut = UC[wildcards.uc]["preprocess"]["separate"]
    return cut["score_model"] if separates(UC[wildcards.uc]) and cut["score"] == "model" else []


def separation_targets(uc):
    return [f"{RESULTS}/{uc}/preprocess/separation.png"] if separates(UC[uc]) else []


# --- Task semantic (workflow/semantic.smk): rasters, pixel classes ---------------------------


def is_semantic(cfg):
    return cfg["task"] == "semantic"


SEMANTIC_UCS = ucs_where(is_semantic)


def semantic_settings(*keys):
    """An input function returning the named keys of the use case's `semantic` section, plus the
    FSS classes resolved (default: the rare class)."""

    def get(wildcards):
        sem = UC[wildcards.uc]["semantic"]
        out = {k: sem[k] for k in keys}
        if "data" in keys:
            out["data"] = only_set(sem["data"], "label_extension")
        if "evaluate" in keys:
            rare = sem["train"]["rare_class"]
            chosen = sem["evaluate"]["fss_classes"] or ([rare] if rare else [])
            out["evaluate"] = {**sem["evaluate"], "fss_classes": chosen}
        return out

    return get


def semantic_prediction(wildcards):
    """What tiled prediction and scoring read: predict, evaluate, background (not training)."""
    s = semantic_settings("predict", "evaluate", "background", "png_masks", "shoreline")(wildcards)
    outputs = only_set({k: s[k] for k in ("png_masks", "shoreline")}, "png_masks", "shoreline")
    return {"predict": s["predict"], "background": s["background"], **outputs, **s["evaluate"]}


def semantic_evaluation(wildcards):
    """What the evaluation reads: the prediction settings and the intervals of its figures."""
    return {**semantic_prediction(wildcards), "intervals": UC[wildcards.uc]["intervals"]}


def semantic_listing(wildcards):
    """What a campaign's raster listing reads of semantic.data (not the split, not the labels'
    rasterisation settings)."""
    data = UC[wildcards.uc]["semantic"]["data"]
    keys = ("images", "labels", "label_extension", "extensions", "vector_field")
    return only_set({k: data[k] for k in keys}, "label_extension")


def only_set(settings, *optional):
    """`settings` without the `optional` keys that are off (None / False): a rule's params
    change, and so rerun it, only when such a key is turned on, not when it is added to the schema.
    """
    return {k: v for k, v in settings.items() if k not in optional or v not in (None, False)}


def semantic_shard_files(kind):
    """Every shard's output folder ("dir") or summary ("json") of a semantic campaign."""

    def get(wildcards):
        base = CAMPAIGN.format(uc=wildcards.uc, campaign=wildcards.campaign)
        suffix = "" if kind == "dir" else ".json"
        return gather.infer(f"{base}/semantic/{{scatteritem}}{suffix}")

    return get


def semantic_targets(uc):
    """Model (trained or given), evaluation (with labelled held-out rasters), every campaign, its
    MLflow run and drift."""
    base = f"{RESULTS}/{uc}"
    out = [f"{base}/model/model_card.json"]
    if trains(UC[uc]):
        out.append(f"{base}/model/training_curve.png")
    if "source" in UC[uc]:  # labelled rasters: a given model is evaluated on them too
        out.append(f"{base}/eval/metrics.json")
    if campaigns(uc):
        out.append(f"{base}/campaigns/summary.tsv")
    for campaign in campaigns(uc):
        c = f"{base}/campaigns/{campaign}"
        out += [f"{c}/predictions.parquet", f"{c}/summary.json"]
        out += tracking_targets(uc, campaign)  # MLflow inference run (+ drift when enabled)
    return out


# --- Targets ----------------------------------------------------------------------------------


def preprocess_targets(uc):
    if not has_preprocess(uc):
        return []
    return [
        f"{RESULTS}/{uc}/preprocess/before_after.png",
        f"{RESULTS}/{uc}/preprocess/examples.png",
    ]


def campaign_targets(uc, campaign):
    cfg = UC[uc]
    base = f"{RESULTS}/{uc}/campaigns/{campaign}"
    out = [f"{base}/predictions.parquet", f"{base}/summary.json"]
    out += ecotaxa_targets(uc, campaign)
    if cfg["litter"]["enabled"]:
        out += [f"{base}/litter/summary.tsv", f"{base}/litter/overlays"]
    return out


def ecotaxa_targets(uc, campaign):
    """The EcoTaxa TSV (and its zip with the objects' images) of a campaign, when enabled."""
    ecotaxa = UC[uc]["export"]["ecotaxa"]
    base = f"{RESULTS}/{uc}/campaigns/{campaign}/export/ecotaxa_{uc}_{campaign}"
    if not ecotaxa["enabled"]:
        return []
    return [f"{base}.tsv", f"{base}.zip"] if ecotaxa["images"] else [f"{base}.tsv"]


def tracking_targets(uc, campaign):
    base = f"{RESULTS}/{uc}/campaigns/{campaign}"
    out = [f"{base}/mlflow_run.json"]
    if drift_enabled(UC[uc]):
        out += [
            f"{base}/drift/drift.json",
            f"{base}/drift/driftwatch.png",
            f"{base}/drift/policy.json",
        ]
    return out


def detect_targets(uc):
    """The targets of a detection use case (for all_targets): model, evaluation, every campaign."""
    base = f"{RESULTS}/{uc}"
    out = [f"{base}/model/model_card.json"]
    if trains(UC[uc]):
        out += [f"{base}/model/training_curve.png", f"{base}/eval/metrics.json"]
    if campaigns(uc):
        out.append(f"{base}/campaigns/summary.tsv")
    for campaign in campaigns(uc):
        c = f"{base}/campaigns/{campaign}"
        out += [
            f"{c}/predictions.parquet",
            f"{c}/counts.parquet",
            f"{c}/detections.json",
            f"{c}/summary.json",
            f"{c}/overlays",
            *tracking_targets(uc, campaign),  # MLflow inference run, drift
        ]
        out += ecotaxa_targets(uc, campaign)
    return out


def standards_targets():
    """DwC-A and RO-Crate per campaign of every use case (every task)."""
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


def cross_validated(cfg):
    """`snakemake cv` covers the use cases that train a classifier (any backend)."""
    return cfg["task"] == "classify" and trains(cfg)


def cross_validates(uc):
    return cross_validated(UC[uc]) and has_labels(uc)


def cv_pretrained(wildcards):
    """The fetched starting weights for backends that take a file (Keras resolves its own)."""
    return [] if backend(UC[wildcards.uc]) == "keras" else pretrained_weights(wildcards)


def backend_env(wildcards):
    """The conda environment of the use case's backend (TensorFlow for Keras)."""
    name = "keras" if backend(UC[wildcards.uc]) == "keras" else "torch"
    return f"../envs/{name}.yaml"


def cv_targets():
    return [f"{RESULTS}/{uc}/cv/metrics.json" for uc in UC if cross_validates(uc)]


def cv_fold_predictions(wildcards):
    k = UC[wildcards.uc]["cv"]["folds"]
    return [f"{RESULTS}/{wildcards.uc}/cv/fold{f}/predictions.parquet" for f in range(k)]


def all_targets():
    targets = []
    for uc, cfg in UC.items():
        if is_sound(cfg):  # workflow/sound.smk
            targets += sound_targets(uc)
            continue
        if cfg["task"] == "semantic":  # pixel classes of rasters: workflow/semantic.smk
            targets += semantic_targets(uc)
            continue
        if cfg["task"] != "classify":  # detection, segmentation, obb: workflow/detect.smk
            targets += detect_targets(uc)
            continue
        base = f"{RESULTS}/{uc}"
        targets.append(f"{base}/model/model_card.json")
        if trains(cfg):
            targets.append(f"{base}/model/training_curve.png")
        if has_labels(uc):
            targets += [f"{base}/eval/metrics.json", f"{base}/eval/confusion_matrix.png"]
        for campaign in campaigns(uc):
            targets += campaign_targets(uc, campaign)
        for campaign in campaigns(uc):
            targets += tracking_targets(uc, campaign)  # MLflow run + drift per campaign
        if campaigns(uc):
            targets.append(f"{base}/campaigns/summary.tsv")
        targets += preprocess_targets(uc)
        targets += separation_targets(uc)
    return targets
