"""The conda envs in envs/ pin exactly the versions pyproject.toml pins."""

import re
import tomllib

import yaml


def pins(requirements):
    out = {}
    for req in requirements:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(\[[^\]]+\])?==([^;\s]+)", req.strip())
        assert m, f"not an exact pin: {req}"
        out[m.group(1).lower().replace("_", "-")] = m.group(3)
    return out


def test_env_files_match_pyproject(repo):
    project = tomllib.loads((repo / "pyproject.toml").read_text())["project"]
    declared = pins(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared.update(pins(extra))
    env_files = sorted((repo / "envs").glob("*.yaml"))
    assert len(env_files) >= 2
    seen = set()
    for env in env_files:
        spec = yaml.safe_load(env.read_text())
        pip = next(d for d in spec["dependencies"] if isinstance(d, dict))["pip"]
        for name, version in pins(pip).items():
            assert name in declared, f"{env.name}: {name} is not pinned in pyproject.toml"
            assert declared[name] == version, f"{env.name}: {name}=={version}, pyproject {declared[name]}"
            seen.add(name)
    assert {"torch", "timm", "snakemake"} - seen == {"snakemake"}  # snakemake runs outside the envs
