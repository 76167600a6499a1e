"""The Slurm test tooling trusts only a private, root-owned state folder (tests/cluster/*.sh).

Only slurm-down.sh's refusal is run here (it stops before anything is ended or removed; a planted
`slurm.conf.orig` is left out on purpose: on a version without the check it would be installed into
/etc/slurm). slurm-up.sh would install and start Slurm if its check failed, so it is not run here;
the cluster itself is brought up by tests/cluster (root, a real Slurm)."""

from __future__ import annotations

import os
import subprocess

from tests.conftest import REPO

CLUSTER = REPO / "tests" / "cluster"


def _run(script: str, state: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "AQUAFLOW_SLURM_STATE": state}
    cmd = ["bash", str(CLUSTER / script)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)


def test_a_state_folder_another_user_could_plant_is_refused_and_no_pid_is_ended(tmp_path):
    planted = tmp_path / "aquaflow-slurm"  # what a fixed /tmp path would be: anyone's folder
    planted.mkdir()
    planted.chmod(0o777)
    victim = subprocess.Popen(["sleep", "120"])
    try:
        (planted / "slurmd.pid").write_text(str(victim.pid))
        for state in (str(planted), ""):
            down = _run("slurm-down.sh", state)
            assert down.returncode == 2 and "not a private folder" in down.stderr
            assert victim.poll() is None, "slurm-down.sh ended a PID from a folder it cannot trust"
    finally:
        victim.kill()
        victim.wait()
