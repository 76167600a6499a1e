"""profiles/kubernetes without a Kubernetes cluster: what can be checked offline.

Checked here: the profile parses and selects the executor; a --dry-run plans the DAG against
S3 storage (a local moto S3 server); and the exact batch/v1 Job manifests the executor plugin
builds for CPU and GPU rules, captured by a fake API server (tests/cluster/fake_k8s.py): GPU
requests and limits, toleration, container image, workflow sources deployed to S3 and the
storage settings handed to the pods through a Secret.
Not checked (needs a real cluster): admission/validation by a real API server, scheduling onto
GPU nodes, the container image's contents, RBAC, and the jobs actually running.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO, local_s3, tiny_usecase, workflow_cmd, write_workdir
from .fake_k8s import fake_k8s_api

PROFILE = REPO / "profiles/kubernetes"
BUCKET = "aquaflow-test"
GPU_RULES = {"train", "infer_shard"}


@pytest.fixture(scope="module")
def s3():
    with local_s3(BUCKET) as (endpoint, client):
        yield endpoint, client


def snakemake_k8s(workdir: Path, endpoint: str, prefix: str, *args: str, env: dict | None = None):
    """snakemake with the Kubernetes workflow profile, pointed at the local S3."""
    cmd = workflow_cmd(
        workdir,
        "--workflow-profile",
        str(PROFILE),
        "--default-storage-prefix",
        f"s3://{BUCKET}/{prefix}",
        "--storage-s3-endpoint-url",
        endpoint,
        *args,
    )
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBECONFIG", "MLFLOW_"))}
    full_env.update(
        {
            # secrets the way a user passes them: environment, not the command line
            "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": "testing",
            "SNAKEMAKE_STORAGE_S3_SECRET_KEY": "testing",
            "KUBECONFIG": str(workdir / "no-kubeconfig"),
            **(env or {}),
        }
    )
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=full_env, timeout=600)


def seed(client, prefix: str, keys: list[str]) -> None:
    """Put placeholder objects, as if earlier jobs had written these outputs to storage."""
    for key in keys:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{key}", Body=b"placeholder")
    # S3 timestamps have 1 s resolution: later seeds must look newer, so wait until the second
    # after the last seed's own timestamp has begun (at most 1 s; the server is on this clock)
    last = client.head_object(Bucket=BUCKET, Key=f"{prefix}/{keys[-1]}")["LastModified"].timestamp()
    time.sleep(max(0.0, math.floor(last) + 1 - time.time()))


def rule_of(job: dict) -> str:
    return re.search(r"--allowed-rules (\w+)", job["spec"]["template"]["spec"]["containers"][0]["args"][1])[1]


@pytest.fixture
def workdir(tmp_path):
    return write_workdir(tmp_path, {"flowcam": tiny_usecase()})


def test_profile_is_a_kubernetes_profile():
    cfg = yaml.safe_load((PROFILE / "config.yaml").read_text())
    assert cfg["executor"] == "kubernetes"
    assert cfg["default-storage-provider"] == "s3"
    assert cfg["container-image"]
    for rule in GPU_RULES:
        assert cfg["set-resources"][rule]["gpu_manufacturer"] == "nvidia"


def test_dry_run_plans_the_dag_against_s3(s3, workdir):
    endpoint, _ = s3
    proc = snakemake_k8s(workdir, endpoint, "dry", "--dry-run")
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert stats["train"] == "1" and stats["infer_shard"] == "16", stats  # set-scatter of the profile
    assert stats["infer_stage"] == "1", stats  # no shared file system: images staged per shard
    assert re.search(r"gpu=1.*gpu_manufacturer=nvidia", out), out[-3000:]
    assert "This was a dry-run" in out


@pytest.fixture(scope="module")
def manifests(s3, tmp_path_factory):
    """Job manifests for two waves: train, then (evaluate, infer_shard x2). infer_inputs and
    infer_stage run on the host (workflow/staging.smk), never as pods."""
    endpoint, client = s3
    work = write_workdir(tmp_path_factory.mktemp("k8s"), {"flowcam": tiny_usecase()})
    prefix = "k8s"
    seed(client, prefix, ["resources/flowcam/raw/demo-images/a/1.jpg"])
    seed(
        client,
        prefix,
        [f"results/flowcam/prepared/{f}" for f in ("manifest.parquet", "rejected.parquet", "classes.json")],
    )
    kubeconfig = work / "kubeconfig"
    runs = []
    archives = {}  # workflow source archive named in each Job -> present in S3 when submitted?

    def check_sources(job):
        command = job["spec"]["template"]["spec"]["containers"][0]["args"][1]
        url = re.search(r"--deploy-sources (s3://\S+)", command)[1]
        key = url.removeprefix(f"s3://{BUCKET}/")
        listed = client.list_objects_v2(Bucket=BUCKET, Prefix=key).get("Contents", [])
        archives[url] = any(o["Key"] == key for o in listed)

    with fake_k8s_api(kubeconfig, on_job=check_sources) as api:
        # the fake API answers at once: poll each second instead of the default 10 s
        args = ("--set-scatter", "infer=2", "--retries", "0", "--verbose")
        args += ("--seconds-between-status-checks", "1")
        env = {"KUBECONFIG": str(kubeconfig)}
        runs.append(snakemake_k8s(work, endpoint, prefix, *args, env=env))
        seed(
            client,
            prefix,
            [
                "results/flowcam/model/model.safetensors",
                "results/flowcam/model/model_card.json",
                "results/flowcam/model/history.tsv",
                "results/flowcam/model/training_curve.png",
            ],
        )
        runs.append(snakemake_k8s(work, endpoint, prefix, *args, env=env))
        jobs, secrets = list(api.jobs), list(api.secrets)
    (work / "job-manifests.json").write_text(json.dumps(jobs, indent=1))
    return {"jobs": jobs, "secrets": secrets, "runs": runs, "archives": archives, "endpoint": endpoint}


def test_the_plugin_submitted_both_waves(manifests):
    rules = sorted(rule_of(j) for j in manifests["jobs"])
    detail = "\n".join(r.stderr[-3000:] for r in manifests["runs"])
    assert rules == ["evaluate", "infer_shard", "infer_shard", "train"], detail
    # the host listed the images and staged one bundle per shard into S3 in the first run
    assert "localrule infer_inputs" in manifests["runs"][0].stderr + manifests["runs"][0].stdout, detail
    assert "localrule infer_stage" in manifests["runs"][0].stderr + manifests["runs"][0].stdout, detail
    # the fake API reported every job failed: each run ends with an error, as it should
    assert all(r.returncode != 0 for r in manifests["runs"])


def test_gpu_rules_request_and_limit_nvidia_gpus(manifests):
    image = yaml.safe_load((PROFILE / "config.yaml").read_text())["container-image"]
    for job in manifests["jobs"]:
        pod = job["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == image
        assert pod["restartPolicy"] == "Never" and job["spec"]["backoffLimit"] == 0
        res = container["resources"]
        if rule_of(job) in GPU_RULES:
            assert res["requests"]["nvidia.com/gpu"] == "1", res
            assert res["limits"]["nvidia.com/gpu"] == "1", res
            assert res["limits"]["cpu"] == "2000m" and res["requests"]["cpu"] == "1900m", res
            assert {
                "key": "nvidia.com/gpu",
                "operator": "Equal",
                "value": "present",
                "effect": "NoSchedule",
            } in pod["tolerations"]
        else:
            assert "nvidia.com/gpu" not in res.get("requests", {}) | (res.get("limits") or {}), res
            assert not pod.get("tolerations")


def test_pods_get_storage_settings_and_sources_through_s3(manifests):
    secrets = {s["metadata"]["name"]: s for s in manifests["secrets"]}
    assert len(secrets) == len(manifests["runs"])  # one Secret per run
    for secret in secrets.values():
        data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert data["snakemake_storage_s3_endpoint_url"] == manifests["endpoint"]
        assert data["snakemake_storage_s3_access_key"] == "testing"
    for job in manifests["jobs"]:
        (container,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]}
        for name in ("ENDPOINT_URL", "ACCESS_KEY", "SECRET_KEY"):
            ref = env[f"SNAKEMAKE_STORAGE_S3_{name}"]
            assert ref["name"] in secrets
        command = container["args"][1]
        assert "--default-storage-provider s3" in command or "--default-storage-provider 's3'" in command
        assert f"s3://{BUCKET}/k8s" in command
        assert "--deploy-sources" in command and "snakemake-storage-plugin-s3" in command
    # the pods fetch the workflow sources from S3 (the main process removes the archive at exit)
    archives = manifests["archives"]
    assert archives and all(archives.values()), archives
    assert all(f"s3://{BUCKET}/k8s/snakemake-workflow-sources." in url for url in archives)
