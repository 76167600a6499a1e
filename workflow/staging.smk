# Runs without a shared file system (Kubernetes pods, --shared-fs-usage none): the images of a
# campaign reach the shard jobs as one bundle per shard, packed by a local rule on the host that
# sees them (aquaflow.engine.staging). With a shared file system nothing is staged: shards read the
# images where they are. Input functions: staging(), shard_table(), staged_bundles() (common.smk).

# Every job reads the use-case files (common.smk): register them with the workflow sources, so
# --deploy-sources ships them to pods also when they are not tracked by git.
for _usecase_file in CONFIG["usecases"].values():
    if _usecase_file not in workflow.configfiles:
        workflow.configfiles.append(_usecase_file)


# Data enters the workflow on the host running snakemake, which sees the sources (a local path,
# the internet): fetching, listing and staging are local jobs. Rules writing a directory() are
# local too: without a shared file system snakemake-storage-plugin-s3 0.3.6 only recognises a
# directory in S3 that the main process uploaded itself (it remembers "not a directory" from
# the DAG-time check), so a directory written by a remote job would be reported missing
# (snakemake/snakemake#870). So preprocess runs on the host there; the jobs that need its
# folder (prepare, train, shards) fetch it from S3. With a shared file system (workstation,
# Slurm) they all stay ordinary jobs.
if staging():

    localrules:
        fetch,
        infer_inputs,
        infer_stage,
        infer_gather,
        preprocess,
        litter_summary,
        detect_prepare,
        detect_gather,


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
