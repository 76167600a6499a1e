"""Every cluster profile parses and plans the FlowCam DAG (--dry-run; needs no cluster).

The Kubernetes profile's dry-run needs S3 and lives in test_kubernetes.py.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from ..conftest import REPO, SNAKEMAKE, tiny_usecase, workflow_cmd, write_workdir

RULE_RESOURCES = re.compile(r"^(?:local)?rule (\w+):\n(?:.*\n)*?\s+resources: (.*)$", re.M)


def dry_run(profile: str, workdir):
    cmd = workflow_cmd(
        workdir,
        "--workflow-profile",
        str(REPO / "profiles" / profile),
        "--dry-run",
    )
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    resources = {rule: res for rule, res in RULE_RESOURCES.findall(out)}
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    return resources, stats


@pytest.mark.parametrize("profile", ["slurm", "slurm-example-site"])
def test_slurm_profiles_map_gpu_rules_to_the_gpu_partition(profile, tmp_path):
    cfg = yaml.safe_load((REPO / "profiles" / profile / "config.yaml").read_text())
    assert cfg["executor"] == "slurm"
    resources, stats = dry_run(profile, write_workdir(tmp_path, {"flowcam": tiny_usecase()}))
    assert stats["infer_shard"] == str(cfg["set-scatter"]["infer"])
    gpu_partition = cfg["set-resources"]["train"]["slurm_partition"]
    for rule in ("train", "infer_shard"):
        assert f"slurm_partition={gpu_partition}" in resources[rule], resources[rule]
        assert "gpu=1" in resources[rule] and "cpus_per_gpu=" in resources[rule]
    for rule in ("fetch", "prepare", "evaluate", "infer_inputs"):
        cpu_partition = cfg["default-resources"]["slurm_partition"]
        assert f"slurm_partition={cpu_partition}" in resources[rule], resources[rule]
        assert "gpu=" not in resources[rule]


def test_default_profile_is_loaded_without_workflow_profile(tmp_path):
    """Run from the repository root, profiles/default applies (here: its scatter count)."""
    cfg = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    proc = subprocess.run(
        [*SNAKEMAKE, "--dry-run", "--directory", str(write_workdir(tmp_path, {"flowcam": tiny_usecase()}))],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = proc.stdout + proc.stderr
    assert "profiles/default" in out
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert stats["infer_shard"] == str(cfg["set-scatter"]["infer"])
