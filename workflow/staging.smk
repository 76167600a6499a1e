# Runs without a shared file system (Kubernetes pods, --shared-fs-usage none): the images of a
# campaign reach the shard jobs as one bundle per shard, packed by a local rule on the host that
# sees them (aquaflow.staging). With a shared file system nothing is staged: shards read the
# images where they are. Included before infer.smk, whose rules use these input functions.
from snakemake_interface_executor_plugins.settings import SharedFSUsage

# Every job reads the use-case files (common.smk): register them with the workflow sources, so
# --deploy-sources ships them to pods also when they are not tracked by git.
for _usecase_file in CONFIG["usecases"].values():
    if _usecase_file not in workflow.configfiles:
        workflow.configfiles.append(_usecase_file)


def staging():
    """True when jobs share no file system with this host (decided at DAG time, so the
    executor's own setting, e.g. Kubernetes', counts)."""
    return SharedFSUsage.INPUT_OUTPUT not in workflow.storage_settings.shared_fs_usage


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


# Data enters the workflow on the host running snakemake, which sees the sources (a local path,
# the internet): fetching, listing and staging are local jobs. Rules writing a directory() are
# local too: without a shared file system snakemake-storage-plugin-s3 0.3.6 only recognises a
# directory in S3 that the main process uploaded itself (it remembers "not a directory" from
# the DAG-time check), so a directory written by a remote job would be reported missing.
localrules:
    fetch,
    infer_inputs,
    infer_stage,
    infer_gather,


rule infer_stage:
    input:
        inputs=f"{CAMPAIGN}/inputs.parquet",
        raw=campaign_raw,
    output:
        gather.infer(f"{RESULTS}/{{{{uc}}}}/campaigns/{{{{campaign}}}}/staged/{{scatteritem}}.zip"),
    log:
        f"{RESULTS}/{{uc}}/logs/{{campaign}}/infer_stage.log",
    benchmark:
        f"{RESULTS}/{{uc}}/benchmarks/{{campaign}}/infer_stage.tsv"
    conda:
        "../envs/data.yaml"
    params:
        raw_name=campaign_raw,
    script:
        "../scripts/infer_stage.py"
