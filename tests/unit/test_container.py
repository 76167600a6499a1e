"""envs/Containerfile and envs/aquaflow.def install the project the way the Makefile does.

No image is built here (no registry, no container runtime in CI): the files are parsed and checked
against the Makefile (`make -n` prints the commands the image build runs), pyproject.toml and the
conda envs. What is verified: same base image and Python, same commands in both files, the make
target they call exists and runs the Makefile's pip lines, every copied path exists and what
`pip install --editable .` needs is copied. Not verified: that the build succeeds.
"""

from __future__ import annotations

import re
import subprocess
import tomllib

import yaml

from tests.conftest import REPO

CONTAINERFILE = REPO / "envs/Containerfile"
APPTAINER = REPO / "envs/aquaflow.def"


def containerfile() -> dict:
    """FROM, COPY sources and RUN commands, with line continuations joined."""
    text = re.sub(r"\\\n\s*", " ", CONTAINERFILE.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    out = {"from": [], "copy": [], "run": []}
    for ln in lines:
        op, _, rest = ln.partition(" ")
        if op == "FROM":
            out["from"].append(rest.strip())
        elif op == "COPY":
            out["copy"] += rest.split()[:-1]
        elif op == "RUN":
            out["run"].append(rest.strip())
    return out


def apptainer() -> dict:
    sections, current = {"header": []}, "header"
    for ln in APPTAINER.read_text().splitlines():
        if not ln.strip() or ln.lstrip().startswith("#"):
            continue
        if ln.startswith("%"):
            current = ln[1:].split()[0]
            sections[current] = []
        else:
            sections[current].append(ln.strip())
    header = dict(ln.split(":", 1) for ln in sections["header"])
    return {
        "from": header["From"].strip(),
        "files": [ln.split()[0] for ln in sections["files"]],
        "post": [ln for ln in sections["post"] if not ln.startswith("cd ")],
        "environment": sections["environment"],
    }


def test_both_files_use_the_same_base_and_commands():
    cf, ap = containerfile(), apptainer()
    assert cf["from"] == [ap["from"]]
    assert cf["run"] == ap["post"]
    assert sorted(cf["copy"]) == sorted(ap["files"])
    assert any("PATH=/opt/aquaflow/.venv/bin:$PATH" in ln for ln in ap["environment"])
    assert "ENV PATH=/opt/aquaflow/.venv/bin:$PATH" in CONTAINERFILE.read_text()


def test_python_version_matches_the_project():
    base = containerfile()["from"][0]
    version = re.search(r"python:(\d+\.\d+)", base)[1]
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == f">={version}"
    for env in (REPO / "envs").glob("*.yaml"):
        deps = yaml.safe_load(env.read_text())["dependencies"]
        assert f"python={version}" in deps, env.name


def test_the_install_is_the_makefile_s_own(tmp_path):
    (install,) = [r for r in containerfile()["run"] if r.startswith("make ")]
    args = install.split()
    assert args[1] == "setup-cluster"
    venv = tmp_path / "venv"  # never created: make -n only prints
    cmd = ["make", "-n", *args[1:], f"VENV={venv}"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=True).stdout
    lines = [ln.strip() for ln in out.splitlines()]
    pip = f"{venv}/bin/python -m pip"
    expected = [
        "python3 -m venv",
        f"{pip} install --quiet --constraint envs/constraints.txt --editable .",
        f"{pip} install --quiet --no-deps planktonclas==",
        f"{pip} install --quiet --no-deps opencv-python-headless==",
        f'{pip} install --quiet --constraint envs/constraints.txt --editable ".[cluster,sound]"',
    ]
    for want in expected:
        assert any(ln.startswith(want) for ln in lines), (want, lines)
    assert not venv.exists()


def test_copied_paths_exist_and_cover_the_editable_install():
    copied = containerfile()["copy"]
    for path in copied:
        assert (REPO / path).exists(), path
    # pip install --editable . reads pyproject.toml, README.md (readme), scripts/ (the package);
    # make reads the Makefile and envs/constraints.txt; snakemake needs the workflow files
    needed = {"pyproject.toml", "README.md", "scripts", "envs", "Makefile", "Snakefile", "workflow"}
    assert needed <= set(copied)


def test_kubernetes_profile_and_readme_point_at_the_container():
    profile = (REPO / "profiles/kubernetes/config.yaml").read_text()
    assert "envs/Containerfile" in profile
    readme = (REPO / "README.md").read_text()
    assert "envs/Containerfile" in readme and "envs/aquaflow.def" in readme


RULE_IMAGES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

with SnakemakeApi(OutputSettings()) as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(config={"container": sys.argv[2]}),
        snakefile=Path(sys.argv[1]),
        workdir=Path.cwd(),
    )
    rules = wf.dag().workflow_api._workflow.rules
    print(json.dumps({r.name: r.container_img for r in rules}))
"""


def test_every_rule_runs_in_the_configured_image(tmp_path):
    """`config: container` gives every rule a `container:` (used by --sdm apptainer)."""
    import json
    import sys

    from tests.conftest import tiny_usecase, write_workdir

    write_workdir(tmp_path, {"flowcam": tiny_usecase()})
    proc = subprocess.run(
        [sys.executable, "-c", RULE_IMAGES, str(REPO / "Snakefile"), "/shared/images/aquaflow.sif"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    images = json.loads(proc.stdout.strip().splitlines()[-1])
    assert {"fetch", "train", "infer_shard", "infer_stage", "export_ecotaxa"} <= set(images)
    assert set(images.values()) == {"/shared/images/aquaflow.sif"}


def test_the_image_runs_as_an_unprivileged_user():
    """The last USER is not root; it is created after the install, and nothing is installed after
    the switch (the installed tree stays root's, read-only to the jobs)."""
    lines = [ln.strip() for ln in CONTAINERFILE.read_text().splitlines()]
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    switches = [i for i, ln in enumerate(lines) if ln.startswith("USER ")]
    assert switches, "the image runs as root (no USER)"
    user = lines[switches[-1]].split()[1].split(":")[0]
    assert user not in ("root", "0")
    install = next(i for i, ln in enumerate(lines) if ln.startswith("RUN make setup-cluster"))
    created = [i for i, ln in enumerate(lines) if ln.startswith("RUN useradd") and ln.split()[-1] == user]
    assert created and install < created[0] < switches[-1]
    assert not [ln for ln in lines[switches[-1] :] if ln.startswith(("RUN ", "COPY "))]
