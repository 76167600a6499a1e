"""tests/snakemake_fork: a forked run is what `python -m snakemake` gives - exit status, output,
folder, environment and PYTHONPATH of the job - so workflow tests cannot pass on a swallowed failure."""

from __future__ import annotations

import json
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


JOBS_SNAKEFILE = """
rule all:
    input: "one.json", "two.json"
rule probe:
    output: "{n}.json"
    threads: lambda wc: 1 if wc.n == "one" else 2
    script: "probe.py"
rule failing:
    output: "failed.json"
    script: "fail.py"
"""
PROBE = """
import json, os, sys, threading, time
forked = "torch" in sys.modules  # already imported: the job is a fork of the server
import torch
from threadpoolctl import threadpool_info
from aquaflow.io import write_json  # found through the job's PYTHONPATH

def late():  # a non-daemon thread: the interpreter waits for it before it exits
    time.sleep(0.5)
    with open(snakemake.output[0] + ".late", "w") as out:
        out.write("joined")

threading.Thread(target=late).start()
pools = {i["user_api"]: i["num_threads"] for i in threadpool_info()}
write_json({
    "forked": forked,
    "name": __name__,
    "path0": sys.path[0] == os.path.dirname(os.path.abspath(sys.argv[0])),
    "executable": sys.executable,
    "cwd": os.getcwd(),
    "probe": os.environ.get("AQUAFLOW_FORK_PROBE"),
    "torch_threads": torch.get_num_threads(),
    "pools": pools,
    "threads": snakemake.threads,
}, snakemake.output[0])
"""
FAIL = """
import sys

def hook(kind, value, tb):  # as aquaflow.runlog: the step's own record of an uncaught error
    with open(snakemake.output[0] + ".hook", "w") as out:
        out.write(f"{kind.__name__}: {value}")
    sys.__excepthook__(kind, value, tb)

sys.excepthook = hook
raise RuntimeError("failing script on purpose")
"""


@pytest.fixture
def jobs_workflow(tmp_path) -> tuple[Path, dict[str, str]]:
    """A workflow of step scripts (`script:`), run with the tests' PYTHONPATH (this checkout's
    library), the one whose jobs the fork server forks."""
    work = tmp_path / "wd"
    work.mkdir()
    (work / "Snakefile").write_text(JOBS_SNAKEFILE)
    (work / "probe.py").write_text(PROBE)
    (work / "fail.py").write_text(FAIL)
    repo = Path(snakemake_fork.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo / "scripts"), "AQUAFLOW_FORK_PROBE": "probe-7"}
    env.pop("AQUAFLOW_TEST_FORK", None)
    return work, env


def probes(work: Path) -> dict[str, dict]:
    out = {n: json.loads((work / f"{n}.json").read_text()) for n in ("one", "two")}
    assert all((work / f"{n}.json.late").read_text() == "joined" for n in out)
    for n in out:
        (work / f"{n}.json").unlink()
    return out


def test_a_forked_step_script_does_what_a_new_interpreter_does(jobs_workflow):
    """Each job's script in a fork of the server: its name, path, folder, environment, threads
    (Snakemake's OMP_NUM_THREADS... for 1 and 2 threads) and non-daemon threads as in a new one."""
    work, env = jobs_workflow
    forked = snakemake_fork.run(["--cores", "2"], work, env, 300)
    assert forked.returncode == 0, forked.stderr
    got = probes(work)
    assert fresh(["--cores", "2"], work, env).returncode == 0
    new = probes(work)
    assert [got[n].pop("forked") for n in got] == [True, True]
    assert [new[n].pop("forked") for n in new] == [False, False]
    assert got == new
    assert [got[n]["torch_threads"] for n in ("one", "two")] == [1, 2]
    assert got["one"]["name"] == "__main__" and got["one"]["path0"] and got["one"]["cwd"] == str(work)
    assert got["one"]["probe"] == "probe-7" and got["one"]["executable"] == sys.executable


def test_a_failing_step_script_fails_its_job(jobs_workflow):
    work, env = jobs_workflow
    forked = snakemake_fork.run(["--cores", "1", "failed.json"], work, env, 120)
    assert forked.returncode == 1
    assert "failing script on purpose" in forked.stderr and "Error in rule failing" in forked.stderr
    assert (work / "failed.json.hook").read_text() == "RuntimeError: failing script on purpose"


def test_a_job_with_another_interpreter_start_up_is_not_forked(jobs_workflow):
    """Another PYTHON* variable in the job's environment: a new interpreter runs the script."""
    work, env = jobs_workflow
    forked = snakemake_fork.run(["--cores", "2"], work, {**env, "PYTHONWARNINGS": "default"}, 300)
    assert forked.returncode == 0, forked.stderr
    assert [p["forked"] for p in probes(work).values()] == [False, False]
