"""The FlowCam demo workflow (tiny budget) through a real Slurm cluster with profiles/slurm.

A Slurm run and a local run of the same use case (the local one from the session's trained model:
the Slurm run trains the same model from a download of the same files); the Slurm run's first
download fails (HTTP 500 injected by the test's server) and the profile's `retries` resubmits the
job. Beside them, at the same time, a distributed training (DDP) as one Slurm job of 2 tasks.
Evidence comes from Slurm itself (`scontrol show job`, jobs stay listed for MinJobAge) and from
the plugin's per-job logs (.snakemake/slurm_logs/, kept by slurm-keep-successful-logs).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from aquaflow.monitoring import tracking

from ..conftest import REPO, run_snakemake, tiny_usecase, trained_copy, workflow_cmd, write_workdir
from ..ddp_checks import gap_to_single_process

pytestmark = pytest.mark.cluster

WORKFLOW_RULES = {
    "fetch",
    "prepare",
    "train",
    "evaluate",
    "campaign_summary",
    "infer_inputs",
    "infer_shard",
    "infer_gather",
    "export_ecotaxa",
    "export_ecotaxa_bundle",
    "export_rocrate",
    "track_inference",
}
GPU_RULES = {"train", "infer_shard"}


def run_logged(cmd: list[str], cwd: Path, log: Path, timeout: int) -> tuple[int, float]:
    """Run a command with output to `log`; on timeout SIGINT (Snakemake cancels its Slurm jobs)."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
            rc = -1
    return rc, time.monotonic() - t0


def slurm_cmd(workdir: Path, *args: str) -> list[str]:
    """The workflow through profiles/slurm, its status polled from the first second (the test's
    cluster is tiny and idle)."""
    profile = ["--workflow-profile", str(REPO / "profiles/slurm"), "--verbose"]
    return workflow_cmd(workdir, *profile, "--slurm-init-seconds-before-status-checks", "1", *args)


def slurm_jobs() -> list[dict[str, str]]:
    """Every job slurmctld still knows (finished ones stay for MinJobAge), as key=value dicts."""
    out = subprocess.run(["scontrol", "-o", "show", "job"], capture_output=True, text=True, check=True).stdout
    jobs = []
    for line in out.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" in fields:
            jobs.append(fields)
    return jobs


def rules_in_log(text: str) -> set[str]:
    return set(re.findall(r"^\s*(?:local)?rule (\w+):", text, flags=re.M)) - {"all"}


def timed_run(workdir: Path) -> float:
    t0 = time.monotonic()
    run_snakemake(workdir)
    return time.monotonic() - t0


STORE = "sqlite:///results/mlflow/mlflow.db"  # a workdir's MLflow store, as cards name it


def ddp_usecase() -> dict:
    """`tiny_usecase()` trained by 2 DDP ranks for 2 epochs (test_two_slurm_tasks_train_one_model)."""
    uc = tiny_usecase()
    uc["model"]["arch"] = "test_convnext"  # LayerNorm: BatchNorm is synchronised on GPUs only
    uc["training"].update(epochs=2, augmentation=[], balancing="weights", distributed=True)
    return uc


def run_ddp(work: Path) -> tuple[int, str]:
    """The DDP use case's model through profiles/slurm: one train job of 2 tasks of 1 CPU (srun),
    on the test's 2-CPU node, no GPU; (exit status, log)."""
    log = work / "snakemake-slurm.log"
    resources = ["train:mpi='srun'", "train:tasks=2", "train:cpus_per_task=1", "train:gpu=0"]
    cmd = slurm_cmd(work, "results/flowcam/model/model_card.json", "--set-resources", *resources)
    rc, _ = run_logged(cmd, work, log, timeout=900)
    return rc, log.read_text()


def mlflow_runs(work: Path) -> list[str]:
    """The run ids of the workdir's MLflow experiment `aquaflow`."""
    client = MlflowClient(tracking.store_uri(STORE, work))
    return [
        r.info.run_id for r in client.search_runs(client.get_experiment_by_name("aquaflow").experiment_id)
    ]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, slurm_cluster, demo_zip_server, flowcam_trained):
    """The Slurm run of `tiny_usecase()` from the demo zip's URL, beside a local run of the same
    use case: the session's model trained from the package's copy of the same files
    (`flowcam_trained`) and its campaign, run while the Slurm run mostly waits for its polls; and,
    submitted at the same time, the DDP training of `ddp_usecase()` (`run_ddp`)."""
    server, source = demo_zip_server
    uc = tiny_usecase(source=source)
    with server.lock:
        server.fail_next = 1  # the first download of the Slurm run gets HTTP 500

    local = trained_copy(flowcam_trained, tmp_path_factory.mktemp("local") / "wd", tiny_usecase())
    ddp = trained_copy(flowcam_trained, tmp_path_factory.mktemp("ddp") / "wd", ddp_usecase())
    ddp_before = mlflow_runs(ddp)  # the session's training, copied with its store
    pool = ThreadPoolExecutor(2)
    local_run = pool.submit(timed_run, local)
    ddp_run = pool.submit(run_ddp, ddp)  # its train job fills the idle time between the polls
    slurm = write_workdir(tmp_path_factory.mktemp("slurm"), {"flowcam": uc})
    log = slurm / "snakemake-slurm.log"
    cmd = slurm_cmd(slurm, "--set-scatter", "infer=2")  # the same shard count as the local run
    rc, slurm_seconds = run_logged(cmd, slurm, log, timeout=1200)
    local_seconds = local_run.result()
    ddp_rc, ddp_text = ddp_run.result()
    pool.shutdown()
    text = log.read_text()
    m = re.search(r"SLURM run ID: (\S+)", text)
    jobs = [j for j in slurm_jobs() if m and j.get("JobName") == m.group(1)]
    result = {
        "rc": rc,
        "log": log,
        "text": text,
        "jobs": jobs,
        "local": local,
        "slurm": slurm,
        "requests": list(server.requests),
        "local_seconds": local_seconds,
        "slurm_seconds": slurm_seconds,
        "cluster_up_seconds": slurm_cluster["up_seconds"],
        "ddp": {"work": ddp, "rc": ddp_rc, "text": ddp_text, "runs_before": ddp_before},
    }
    summary = {k: v for k, v in result.items() if k.endswith("seconds")}
    summary["sbatch"] = re.findall(r"sbatch call: (.*)", text)
    (slurm_cluster["state"] / "slurm-vs-local.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    return result


def test_slurm_run_completes(runs):
    assert runs["rc"] == 0, runs["text"][-8000:]
    assert runs["jobs"], "no Slurm job of this run is known to slurmctld"
    assert (runs["slurm"] / "results/flowcam/campaigns/demo/export/ecotaxa_flowcam_demo.zip").is_file()


def test_every_rule_ran_as_a_slurm_job(runs):
    by_id = {j["JobId"]: j for j in runs["jobs"]}
    logs = sorted((runs["slurm"] / ".snakemake/slurm_logs").rglob("*.log"))
    seen: dict[str, set[str]] = {}
    for log in logs:
        job_id = log.stem
        assert job_id in by_id, f"{log} belongs to no Slurm job of this run"
        for rule in rules_in_log(log.read_text()):
            seen.setdefault(rule, set()).add(job_id)
    assert set(seen) == WORKFLOW_RULES, f"rules executed inside Slurm jobs: {sorted(seen)}"
    assert len(seen["infer_shard"]) == 2  # one Slurm job per shard
    # the coordinating Snakemake process itself ran no rule: each job line names a Slurm job
    assert len(re.findall(r"has been submitted with SLURM jobid", runs["text"])) == len(runs["jobs"])


def test_gpu_rules_go_to_the_gpu_partition_with_a_gpu(runs):
    for job in runs["jobs"]:
        comment = job.get("Comment", "")
        rule = re.match(r"rule_(\w+?)(?:_wildcards_.*)?$", comment).group(1)
        tres = job.get("TresPerJob", "") + job.get("TresPerNode", "")
        if rule in GPU_RULES:
            assert job["Partition"] == "gpu", job
            assert "gpu:1" in tres, job
        else:
            assert job["Partition"] == "cpu", job
            assert "gpu" not in tres, job
    gpu_calls = [c for c in re.findall(r"sbatch call: (.*)", runs["text"]) if "rule_train" in c]
    assert gpu_calls and all("-p gpu" in c and "--gpus=1" in c for c in gpu_calls), gpu_calls
    assert all("--cpus-per-gpu=2" in c for c in gpu_calls), gpu_calls


def test_tiny_steps_after_inference_are_one_grouped_job(runs):
    grouped = [j for j in runs["jobs"] if j["Comment"].startswith("rule_collect")]
    assert len(grouped) == 1, [j["Comment"] for j in runs["jobs"]]
    logs = list((runs["slurm"] / ".snakemake/slurm_logs").glob("group_collect*/**/*.log"))
    assert len(logs) == 1
    assert rules_in_log(logs[0].read_text()) == {
        "infer_gather",
        "export_ecotaxa",
        "export_ecotaxa_bundle",
        "export_rocrate",
        "campaign_summary",
    }


def test_failed_download_is_retried_by_the_profile(runs):
    assert runs["requests"][0].endswith("/set.zip") and len(runs["requests"]) >= 2
    fetch = sorted(
        (j for j in runs["jobs"] if j["Comment"].startswith("rule_fetch")), key=lambda j: int(j["JobId"])
    )
    assert [j["JobState"] for j in fetch] == ["FAILED", "COMPLETED"], fetch
    assert runs["rc"] == 0


def test_outputs_equal_the_local_run(runs):
    local = runs["local"] / "results/flowcam"
    slurm = runs["slurm"] / "results/flowcam"
    card_l = json.loads((local / "model/model_card.json").read_text())
    card_s = json.loads((slurm / "model/model_card.json").read_text())
    assert card_s["id"] == card_l["id"]  # sha256 of the trained weights
    assert json.loads((slurm / "eval/metrics.json").read_text()) == json.loads(
        (local / "eval/metrics.json").read_text()
    )
    for name in ("predictions.parquet", "rejected.parquet"):
        a = pd.read_parquet(local / "campaigns/demo" / name)
        b = pd.read_parquet(slurm / "campaigns/demo" / name)
        # every column, run_id included: it hashes model, input table and settings only
        pd.testing.assert_frame_equal(a, b)
    tsv = "campaigns/demo/export/ecotaxa_flowcam_demo.tsv"
    assert (slurm / tsv).read_text() == (local / tsv).read_text()


def test_two_slurm_tasks_train_one_model(runs):
    """training.distributed with the train job's `mpi` resource (srun) and 2 tasks: one Slurm job of
    2 tasks, srun starts one DDP rank per task (gloo on the CPUs), rank 0 writes the model card and
    the one MLflow training run; after 2 epochs the weights equal single-process training of the
    same recipe and seed within 1e-6, while training moved them 100x more. It ran beside the
    demo's Slurm run (`runs`), from a copy of the session's workdir: its fetched and prepared data
    are up to date, so train is its only job."""
    ddp = runs["ddp"]
    work, text, uc = ddp["work"], ddp["text"], ddp_usecase()
    assert ddp["rc"] == 0, text[-8000:]
    run_id = re.search(r"SLURM run ID: (\S+)", text).group(1)
    jobs = [j for j in slurm_jobs() if j.get("JobName") == run_id]
    assert [j["Comment"] for j in jobs] == ["rule_train_wildcards_flowcam"], jobs
    assert jobs[0]["NumTasks"] == "2" and jobs[0]["JobState"] == "COMPLETED", jobs
    assert [c for c in re.findall(r"sbatch call: (.*)", text) if "rule_train" in c and "--ntasks=2" in c]

    model = work / "results/flowcam/model"
    train_log = (work / "results/flowcam/logs/train.log").read_text()
    assert "training.distributed: 2 ranks started by srun" in train_log
    card = json.loads((model / "model_card.json").read_text())
    assert card["training"]["config"]["distributed"] is True and card["training"]["epochs_run"] == 2
    assert tracking.store_uri(card["mlflow"]["tracking_uri"], work) == tracking.store_uri(STORE, work)
    new = [r for r in mlflow_runs(work) if r not in ddp["runs_before"]]
    assert new == [card["mlflow"]["run_id"]]  # one run: rank 0's
    assert not list(model.glob(".ddp-*"))  # the ranks' shared arguments are gone
    worst, moved = gap_to_single_process(uc, work)
    assert worst < 1e-6 and moved > 100 * worst, (worst, moved)
