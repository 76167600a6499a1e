# aquaflow: aquatic image collections -> trained models, bulk predictions, standard exports.
# Run:  snakemake --cores all        (profiles/default is loaded automatically)
# Docs: README.md (usage), config/README.md (every config key).
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


# Shards of bulk inference; sites override it with --set-scatter infer=N (profiles/).
scattergather:
    infer=2,


include: "workflow/common.smk"


# Every rule runs in this image under --sdm apptainer (config key `container`; null: none).
container: CONFIG["container"]


include: "workflow/fetch.smk"
include: "workflow/preprocess.smk"
include: "workflow/multiples.smk"
include: "workflow/prepare.smk"
include: "workflow/train.smk"
include: "workflow/evaluate.smk"
include: "workflow/cv.smk"
include: "workflow/staging.smk"
include: "workflow/infer.smk"
include: "workflow/export.smk"
include: "workflow/litter.smk"
include: "workflow/drift.smk"
include: "workflow/standards.smk"
include: "workflow/keras.smk"
include: "workflow/detect.smk"
include: "workflow/ultralytics.smk"
include: "workflow/sound.smk"
include: "workflow/semantic.smk"


# Given models are copied in on the host that sees their path / registry (also without a shared
# file system); the jobs then read the copy under results/.
localrules:
    import_model,


rule all:
    default_target: True
    input:
        all_targets(),
        standards_targets(),
