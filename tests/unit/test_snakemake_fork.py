"""tests/snakemake_fork: a forked run is what `python -m snakemake` gives - exit status, output,
folder, environment and PYTHONPATH of the job - so workflow tests cannot pass on a swallowed failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import snakemake_fork

SNAKEFILE = """
import mod_on_path
rule all:
    input: "out.txt"
rule make:
    output: "out.txt"
    shell: "echo $AQUAFLOW_FORK_PROBE {mod_on_path.VALUE} > {output}"
rule broken:
    output: "never.txt"
    shell: "echo failing on purpose >&2; exit 3"
rule slow:
    output: "slow.txt"
    shell: "sleep 10; touch {output}"
"""


@pytest.fixture
def workflow(tmp_path) -> tuple[Path, dict[str, str]]:
    """A workflow folder whose Snakefile imports a module found only through PYTHONPATH."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mod_on_path.py").write_text("VALUE = 'from-pythonpath'\n")
    work = tmp_path / "wd"
    work.mkdir()
    (work / "Snakefile").write_text(SNAKEFILE)
    env = {**os.environ, "PYTHONPATH": str(lib), "AQUAFLOW_FORK_PROBE": "probe-42"}
    return work, env


def fresh(args: list[str], work: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", *args]
    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=120)


def test_a_forked_run_does_what_a_new_interpreter_does(workflow):
    work, env = workflow
    forked = snakemake_fork.run(["--cores", "1"], work, env, 120)
    assert forked.returncode == 0, forked.stderr
    # the job saw the run's environment, the Snakefile the run's PYTHONPATH, both the run's folder
    assert (work / "out.txt").read_text().split() == ["probe-42", "from-pythonpath"]
    (log,) = (work / ".snakemake/log").glob("*.snakemake.log")
    assert f"Run directory: {work}\n" in log.read_text()  # not the server's folder at its import

    version = snakemake_fork.run(["--version"], work, env, 60)
    assert version.returncode == 0 and version.stdout == fresh(["--version"], work, env).stdout


def test_a_failing_run_reports_its_failure(workflow):
    work, env = workflow
    forked = snakemake_fork.run(["--cores", "1", "never.txt"], work, env, 120)
    new = fresh(["--cores", "1", "never.txt"], work, env)
    assert forked.returncode == new.returncode == 1
    assert "Error in rule broken" in forked.stderr and "failing on purpose" in forked.stderr
    missing = snakemake_fork.run(["--cores", "1", "-s", "nope"], work, env, 60)
    assert missing.returncode == 1 and 'Snakefile "nope" not found' in missing.stderr


def test_a_run_past_its_timeout_is_stopped(workflow):
    work, env = workflow
    with pytest.raises(subprocess.TimeoutExpired):
        snakemake_fork.run(["--cores", "1", "slow.txt"], work, env, 3)


def test_only_runs_with_the_servers_start_up_are_forked():
    assert snakemake_fork.forkable({"PYTHONPATH": "/a"}, "/a")
    assert not snakemake_fork.forkable({"PYTHONPATH": "/netguard:/a"}, "/a")
    assert not snakemake_fork.forkable({}, "/a")
