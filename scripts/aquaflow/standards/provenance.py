"""Workflow Run RO-Crate (WRROC 0.5, RO-Crate 1.1) for one campaign's results, zipped.

The crate holds the Snakefile and rule files (the Snakefile is the main entity, a
ComputationalWorkflow in Snakemake), the resolved use-case config, the campaign's inputs (model
card, sample and taxonomy tables, ...) with their sha256, its outputs (predictions, exports), and
one CreateAction for the run: instrument = the workflow, object = inputs, result = outputs,
start/end times, the software versions and the MLflow run ids. WRROC 0.5 is declared because it is
the newest Workflow Run Crate profile `roc-validator` ships (0.6 needs RO-Crate 1.3).
"""

from __future__ import annotations

import base64
import datetime as dt
import importlib.metadata as md
import json
import platform
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rocrate.rocrate import ROCrate

from aquaflow import __version__
from aquaflow.io import atomic_path, public, public_uri, sha256_file

PROFILES = {
    "process": "https://w3id.org/ro/wfrun/process/0.5",
    "workflow": "https://w3id.org/ro/wfrun/workflow/0.5",
    "provenance": "https://w3id.org/ro/wfrun/provenance/0.5",
    "wroc": "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
}
PROFILE_TITLES = {
    "process": "Process Run Crate",
    "workflow": "Workflow Run Crate",
    "provenance": "Provenance Run Crate",
    "wroc": "Workflow RO-Crate",
}
SHA256_TERM = "https://w3id.org/ro/terms/workflow-run#sha256"
SOFTWARE = (
    "snakemake",
    "torch",
    "timm",
    "onnxruntime",
    "ultralytics",
    "pycocotools",
    "numpy",
    "pandas",
    "pyarrow",
    "mlflow",
    "rocrate",
)
BIOSCHEMAS_WORKFLOW = "https://bioschemas.org/profiles/ComputationalWorkflow/1.0-RELEASE"
# encodingFormat (MIME type) by file suffix; anything else is application/octet-stream
MEDIA_TYPES = {
    ".json": "application/json",
    ".parquet": "application/vnd.apache.parquet",
    ".zip": "application/zip",
    ".tsv": "text/tab-separated-values",
    ".csv": "text/csv",
    ".yaml": "application/yaml",
    ".yml": "application/yaml",
    ".smk": "text/x-snakemake",
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".png": "image/png",
    ".html": "text/html",
}
SPDX = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
# what the run did, by the use case's task
DESCRIPTIONS = {
    "classify": "Bulk classification of a campaign and its standard exports",
    "detect": "Object detection (boxes) over a campaign and its standard exports",
    "segment": "Instance segmentation (masks) over a campaign and its standard exports",
    "obb": "Oriented-box detection over a campaign and its standard exports",
    "sound": "Vessel class and distance per window of a campaign's underwater recordings",
    "semantic": "Semantic segmentation (a class per pixel) of a campaign's rasters, georeferenced outputs",
}


@dataclass(frozen=True)
class Job:
    """One executed Snakemake job, from the records Snakemake keeps in .snakemake/metadata."""

    rule: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: tuple[str, ...]
    start: float
    end: float
    checksums: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


def _record_path(name: str) -> str:
    return base64.urlsafe_b64decode(name + "=" * (-len(name) % 4)).decode()


def _job_key(rec: dict[str, Any]) -> tuple:
    return (rec["rule"], rec.get("job_hash"))


def job_records(metadata_dir: str | Path, targets: list[str]) -> list[Job]:
    """The executed jobs that made `targets` (paths relative to the working directory) and, going
    back through their inputs, everything upstream, oldest first. Snakemake writes one record per
    output file: a job is (rule, job hash), from the earliest start to the latest end of its
    records (they differ by milliseconds). [] when there are none (a job that shares no file
    system with the workflow's working directory)."""
    metadata_dir = Path(metadata_dir)
    by_output: dict[str, dict[str, Any]] = {}
    if metadata_dir.is_dir():
        for f in metadata_dir.iterdir():
            try:
                rec = json.loads(f.read_text())
                by_output[_record_path(f.name)] = rec
            except (ValueError, UnicodeDecodeError):
                continue
    groups: dict[tuple, list[str]] = {}
    for path, rec in by_output.items():
        if rec.get("rule") and not rec.get("incomplete"):
            groups.setdefault(_job_key(rec), []).append(path)
    seen: set[tuple] = set()
    todo = list(targets)
    while todo:
        rec = by_output.get(todo.pop())
        if not rec or not rec.get("rule"):
            continue
        key = _job_key(rec)
        if key in seen or key not in groups:
            continue
        seen.add(key)
        todo.extend(rec.get("input") or [])
    checksums: dict[str, str] = {}
    for rec in by_output.values():
        checksums.update(rec.get("input_checksums") or {})
    jobs = []
    for key in seen:
        rec = by_output[groups[key][0]]
        starts = [float(by_output[p].get("starttime") or 0) for p in groups[key]]
        ends = [float(by_output[p].get("endtime") or 0) for p in groups[key]]
        jobs.append(
            Job(
                rule=key[0],
                inputs=tuple(rec.get("input") or ()),
                outputs=tuple(sorted(groups[key])),
                params=tuple(str(p) for p in rec.get("params") or ()),
                start=min(starts),
                end=max(*ends, *starts),
                checksums={p: checksums[p] for p in groups[key] if p in checksums},
            )
        )
    return sorted(jobs, key=lambda j: (j.start, j.rule))


def software_versions(packages: tuple[str, ...] = SOFTWARE) -> dict[str, str]:
    """Installed versions of the packages that shape the results (absent ones are skipped)."""
    out = {"python": platform.python_version(), "aquaflow": __version__}
    for name in packages:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


def media_type(path: str | Path) -> str:
    """The encodingFormat of a file (Snakefile: text/x-snakemake)."""
    path = Path(path)
    return (
        "text/x-snakemake"
        if path.name == "Snakefile"
        else MEDIA_TYPES.get(path.suffix, "application/octet-stream")
    )


def software_entity(name: str, version: str) -> dict[str, Any]:
    """A SoftwareApplication with an absolute id and a url: the release's page (PyPI, python.org)."""
    if name == "python":
        url = "https://www.python.org/"
        uid = f"https://www.python.org/downloads/release/python-{version.replace('.', '')}/"
    else:
        url = f"https://pypi.org/project/{name}/"
        uid = f"{url}{version}/"
    return {"@id": uid, "@type": "SoftwareApplication", "name": name, "softwareVersion": version, "url": url}


def people(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(author/agent, publisher) from export.dwca.eml: the creator (Person) or else the
    organization; the publisher is the organization ("unknown" when the config names none), with
    its web page export.rocrate.organization_url."""
    export = config.get("export") or {}
    eml = (export.get("dwca") or {}).get("eml") or {}
    org = {
        "@id": "#organization",
        "@type": "Organization",
        "name": eml.get("organization") or "unknown (set export.dwca.eml.organization)",
    }
    if (export.get("rocrate") or {}).get("organization_url"):
        org["url"] = export["rocrate"]["organization_url"]
    if not eml.get("creator"):
        return org, org
    person = {
        "@id": "#creator",
        "@type": "Person",
        "name": eml["creator"],
        "affiliation": {"@id": org["@id"]},
    }
    if eml.get("email"):
        person["email"] = eml["email"]
    return person, org


def license_entity(text: str) -> dict[str, Any]:
    """A licence as a contextual entity: its SPDX page for an SPDX identifier, else named."""
    uid = f"https://spdx.org/licenses/{text}" if SPDX.match(text) else "#license"
    return {"@id": uid, "@type": "CreativeWork", "name": text}


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds")


def _file_entity(crate: ROCrate, path: Path, dest: str, role: str, max_copy_bytes: int) -> Any:
    """A File in the crate; a file larger than max_copy_bytes (predictions with embeddings of a
    year's campaign) is described by name, size and sha256 but not copied."""
    size = path.stat().st_size
    props = {
        "name": path.name,
        "description": role,
        "contentSize": str(size),
        "sha256": sha256_file(path),
        "dateModified": _iso(path.stat().st_mtime),
        "encodingFormat": media_type(path),
    }
    if size > max_copy_bytes:
        props["description"] = f"{role}; not copied ({size} bytes): {public_uri(str(path))}"
        return crate.add_jsonld({"@id": f"#{dest}", "@type": "CreativeWork", **props})
    return crate.add_file(str(path), dest_path=dest, properties=props)


def add_jobs(
    crate: ROCrate,
    wf: Any,
    jobs: list[Job],
    files: dict[str, Any],
    agent: Any,
    workflow_url: str | None,
) -> list[Any]:
    """Provenance Run Crate: each rule a tool (SoftwareApplication) and a step (HowToStep) of the
    workflow, each executed job a CreateAction (instrument = its rule; object = its input files and
    params; result = its output files, with sha256 where known); returns the actions."""
    if not jobs:
        return []
    base = (workflow_url or "").rstrip("/")
    tools: dict[str, Any] = {}
    steps = []
    for rule in sorted({j.rule for j in jobs}):
        tool = {
            "@id": f"{base}#rule-{rule}",
            "@type": "SoftwareApplication",
            "name": f"rule {rule}",
            "softwareVersion": __version__,
        }
        if workflow_url:
            tool["url"] = workflow_url
        tools[rule] = crate.add_jsonld(tool)
        steps.append(
            crate.add_jsonld(
                {
                    "@id": f"#step-{rule}",
                    "@type": "HowToStep",
                    "name": rule,
                    "position": str(len(steps)),
                    "workExample": {"@id": tools[rule].id},
                }
            )
        )
    wf["hasPart"] = list(tools.values())
    wf["step"] = steps
    types = wf.as_jsonld()["@type"]
    types = types if isinstance(types, list) else [types]
    if "HowTo" not in types:  # a workflow with steps (rocrate has no setter for @type)
        wf.as_jsonld()["@type"] = [*types, "HowTo"]

    def ref(path: str, sha: str | None) -> Any:
        known = files.get(str(Path(path).resolve()))
        if known is not None:
            return known
        uid = f"#path:{path}"
        entity = crate.get(uid)
        if entity is None:
            props = {
                "@id": uid,
                "@type": "CreativeWork",
                "name": path,
                "description": "workflow file (not in the crate)",
            }
            if sha:
                props["sha256"] = sha
            entity = crate.add_jsonld(props)
        return entity

    checksums: dict[str, str] = {}
    for j in jobs:
        checksums.update(j.checksums)
    actions = []
    for n, j in enumerate(jobs):
        params = [
            crate.add_jsonld(
                {"@id": f"#job-{n}-params-{k}", "@type": "PropertyValue", "name": f"params[{k}]", "value": v}
            )
            for k, v in enumerate(j.params)
        ]
        action = {
            "@id": f"#job-{n}",
            "@type": "CreateAction",
            "name": f"rule {j.rule}",
            "description": f"Snakemake job of rule {j.rule}",
            "instrument": {"@id": tools[j.rule].id},
            "object": [{"@id": ref(p, checksums.get(p)).id} for p in j.inputs]
            + [{"@id": p.id} for p in params],
            "result": [{"@id": ref(p, checksums.get(p)).id} for p in j.outputs],
            "startTime": _iso(j.start),
            "endTime": _iso(j.end),
            "actionStatus": "http://schema.org/CompletedActionStatus",
            "agent": {"@id": agent.id},
        }
        for key in ("object", "result"):
            if len(action[key]) == 1:
                action[key] = action[key][0]
            elif not action[key]:
                del action[key]
        actions.append(crate.add_jsonld(action))
    return actions


def readme_text(name: str, task: str, inputs: list[Any], outputs: list[Any]) -> str:
    """The crate's README.md: what ran and which files it holds."""
    lines = [f"# {name}", "", f"{DESCRIPTIONS[task]}, by aquaflow {__version__}.", ""]
    lines += ["Machine-readable provenance: `ro-crate-metadata.json` (Workflow Run RO-Crate).", ""]
    for title, entities in (("Inputs", inputs), ("Outputs", outputs)):
        lines += [f"## {title}", ""]
        lines += [f"- `{e.id}`: {e.get('description') or e.get('name', '')}" for e in entities]
        lines.append("")
    return "\n".join(lines)


def build(
    *,
    name: str,
    snakefile: str | Path,
    rule_files: list[str | Path],
    config: dict[str, Any],
    config_path: str | Path,
    inputs: dict[str, str | Path],
    outputs: dict[str, str | Path],
    mlflow_runs: list[str],
    start: float | None = None,
    end: float | None = None,
    software: dict[str, str] | None = None,
    max_copy_mb: float = 200,
    task: str = "classify",
    jobs: list[Job] | None = None,
    workflow_url: str | None = None,
) -> ROCrate:
    """The crate object. `config_path`: the resolved `config` as a file; `inputs`/`outputs`: role ->
    file; start/end: epoch seconds (default: the oldest input's and newest output's modification
    time, i.e. when the run's files were made). Files are read when the crate is written; files
    over `max_copy_mb` are described (size, sha256, path) but not copied; `task` words the run.
    `jobs` (job_records): one CreateAction per executed job, the rules as the workflow's tools and
    steps (Provenance Run Crate); `workflow_url`: where this aquaflow release is published (the
    workflow's url; its rules' ids are `<workflow_url>#rule-<name>`)."""
    crate = ROCrate(version="1.1")
    # the WRROC term for file checksums, defined inline so the crate reads without fetching contexts
    crate.metadata.extra_contexts.append({"sha256": SHA256_TERM})
    snakefile = Path(snakefile)
    t1 = end if end is not None else max(Path(p).stat().st_mtime for p in outputs.values())
    wf_props = {
        "name": f"aquaflow {__version__}",
        "version": __version__,
        "encodingFormat": media_type(snakefile),
        "conformsTo": {"@id": BIOSCHEMAS_WORKFLOW},
    }
    if workflow_url:  # where this release is published (the workflow stays a file in the crate)
        wf_props["url"] = workflow_url
    wf = crate.add_workflow(
        str(snakefile), dest_path="workflow/Snakefile", main=True, lang="snakemake", properties=wf_props
    )
    for f in rule_files:
        f = Path(f)
        crate.add_file(
            str(f),
            dest_path=f"workflow/{f.name}",
            properties={"name": f.name, "encodingFormat": media_type(f)},
        )
    soft = software or software_versions()
    soft = {k: v for k, v in soft.items() if k != "aquaflow"}  # the workflow itself (its version)
    apps = [crate.add_jsonld(software_entity(k, v)) for k, v in sorted(soft.items())]
    wf["softwareRequirements"] = apps
    cfg_entity = crate.add_file(
        str(config_path),
        dest_path="config/resolved_config.yaml",
        properties={
            "name": "resolved use-case config (defaults filled)",
            "encodingFormat": "application/yaml",
        },
    )
    limit = int(max_copy_mb * 1e6)
    in_entities = [cfg_entity] + [
        _file_entity(crate, Path(p), f"inputs/{Path(p).name}", role, limit) for role, p in inputs.items()
    ]
    out_entities = [
        _file_entity(crate, Path(p), f"outputs/{Path(p).name}", role, limit) for role, p in outputs.items()
    ]
    t0 = start if start is not None else min(Path(p).stat().st_mtime for p in inputs.values())
    props: dict[str, Any] = {
        "name": f"Run of aquaflow: {name}",
        "description": DESCRIPTIONS[task],
        "startTime": _iso(t0),
        "endTime": _iso(t1),
        "actionStatus": "http://schema.org/CompletedActionStatus",
    }
    if mlflow_runs:
        ids = [f"mlflow-run:{r}" for r in mlflow_runs]
        props["identifier"] = ids[0] if len(ids) == 1 else ids  # no singleton arrays (RO-Crate 1.1)
    agent, publisher = people(config)
    agent_entity = crate.add_jsonld(agent)
    publisher_entity = agent_entity if publisher is agent else crate.add_jsonld(publisher)
    props["agent"] = agent_entity
    action = crate.add_action(wf, object=in_entities, result=out_entities, properties=props)
    for key in ("object", "result"):  # no singleton arrays (RO-Crate 1.1 JSON-LD recommendation)
        if len(action[key]) == 1:
            action[key] = action[key][0]
    files = {
        str(Path(p).resolve()): e
        for p, e in zip([*inputs.values(), *outputs.values()], [*in_entities[1:], *out_entities], strict=True)
    }
    actions = [action, *add_jobs(crate, wf, jobs or [], files, agent_entity, workflow_url)]
    crate.root_dataset["mentions"] = actions[0] if len(actions) == 1 else actions
    crate.root_dataset["name"] = name
    crate.root_dataset["description"] = f"Workflow Run RO-Crate of aquaflow for {name}"
    crate.root_dataset["license"] = crate.add_jsonld(
        license_entity(config.get("source", {}).get("license") or "unknown")
    )
    crate.root_dataset["author"] = agent_entity
    crate.root_dataset["publisher"] = publisher_entity
    crate.root_dataset["datePublished"] = _iso(t1)
    readme = Path(config_path).with_name("README.md")  # beside the config: read when written
    readme.write_text(readme_text(name, task, in_entities, out_entities), encoding="utf-8")
    crate.add_file(
        str(readme),
        dest_path="README.md",
        properties={"name": "README", "about": crate.root_dataset, "encodingFormat": "text/markdown"},
    )
    profiles = []
    for key in ("process", "workflow", *(("provenance",) if jobs else ()), "wroc"):
        url = PROFILES[key]
        profiles.append(
            crate.add_jsonld(
                {
                    "@id": url,
                    "@type": "CreativeWork",
                    "name": PROFILE_TITLES[key],
                    "version": url.rsplit("/", 1)[1],
                }
            )
        )
    crate.root_dataset["conformsTo"] = profiles
    return crate


def write(out: str | Path, **kwargs: Any) -> None:
    """Build the crate and write it as a zip, atomically."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "resolved_config.yaml"
        # the config as published: URIs without credentials or query strings, paths relative
        cfg.write_text(yaml.safe_dump(public(kwargs["config"]), sort_keys=False))
        crate = build(config_path=cfg, **kwargs)
        with atomic_path(out) as dest:
            crate.write_zip(str(dest))
