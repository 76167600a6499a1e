"""Workflow Run RO-Crate (WRROC 0.5, RO-Crate 1.1) for one campaign's results, zipped.

The crate holds the Snakefile and rule files (the Snakefile is the main entity, a
ComputationalWorkflow in Snakemake), the resolved use-case config, the campaign's inputs (model
card, sample and taxonomy tables, ...) with their sha256, its outputs (predictions, exports), and
one CreateAction for the run: instrument = the workflow, object = inputs, result = outputs,
start/end times, the software versions and the MLflow run ids. WRROC 0.5 is declared because it is
the newest Workflow Run Crate profile `roc-validator` ships (0.6 needs RO-Crate 1.3).
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import platform
import tempfile
from pathlib import Path
from typing import Any

import yaml
from rocrate.rocrate import ROCrate

from aquaflow import __version__
from aquaflow.io import atomic_path, public, public_uri, sha256_file

PROFILES = {
    "process": "https://w3id.org/ro/wfrun/process/0.5",
    "workflow": "https://w3id.org/ro/wfrun/workflow/0.5",
    "wroc": "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
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
# what the run did, by the use case's task
DESCRIPTIONS = {
    "classify": "Bulk classification of a campaign and its standard exports",
    "detect": "Object detection (boxes) over a campaign and its standard exports",
    "segment": "Instance segmentation (masks) over a campaign and its standard exports",
    "obb": "Oriented-box detection over a campaign and its standard exports",
    "semantic": "Semantic segmentation (a class per pixel) of a campaign's rasters, georeferenced outputs",
}


def software_versions(packages: tuple[str, ...] = SOFTWARE) -> dict[str, str]:
    """Installed versions of the packages that shape the results (absent ones are skipped)."""
    out = {"python": platform.python_version(), "aquaflow": __version__}
    for name in packages:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            continue
    return out


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
    }
    if size > max_copy_bytes:
        props["description"] = f"{role}; not copied ({size} bytes): {public_uri(str(path))}"
        return crate.add_jsonld({"@id": f"#{dest}", "@type": "CreativeWork", **props})
    return crate.add_file(str(path), dest_path=dest, properties=props)


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
) -> ROCrate:
    """The crate object. `config_path`: the resolved `config` as a file; `inputs`/`outputs`: role ->
    file; start/end: epoch seconds (default: the oldest input's and newest output's modification
    time, i.e. when the run's files were made). Files are read when the crate is written; files
    over `max_copy_mb` are described (size, sha256, path) but not copied; `task` words the run."""
    crate = ROCrate(version="1.1")
    # the WRROC term for file checksums, defined inline so the crate reads without fetching contexts
    crate.metadata.extra_contexts.append({"sha256": SHA256_TERM})
    snakefile = Path(snakefile)
    wf = crate.add_workflow(
        str(snakefile),
        dest_path="workflow/Snakefile",
        main=True,
        lang="snakemake",
        properties={"name": f"aquaflow {__version__}", "version": __version__},
    )
    for f in rule_files:
        f = Path(f)
        crate.add_file(str(f), dest_path=f"workflow/{f.name}", properties={"name": f.name})
    soft = software or software_versions()
    apps = [
        crate.add_jsonld(
            {"@id": f"#software-{k}", "@type": "SoftwareApplication", "name": k, "softwareVersion": v}
        )
        for k, v in sorted(soft.items())
    ]
    wf["softwareRequirements"] = apps
    cfg_entity = crate.add_file(
        str(config_path),
        dest_path="config/resolved_config.yaml",
        properties={"name": "resolved use-case config (defaults filled)", "encodingFormat": "text/yaml"},
    )
    limit = int(max_copy_mb * 1e6)
    in_entities = [cfg_entity] + [
        _file_entity(crate, Path(p), f"inputs/{Path(p).name}", role, limit) for role, p in inputs.items()
    ]
    out_entities = [
        _file_entity(crate, Path(p), f"outputs/{Path(p).name}", role, limit) for role, p in outputs.items()
    ]
    t0 = start if start is not None else min(Path(p).stat().st_mtime for p in inputs.values())
    t1 = end if end is not None else max(Path(p).stat().st_mtime for p in outputs.values())
    props: dict[str, Any] = {
        "name": f"Run of aquaflow: {name}",
        "description": DESCRIPTIONS[task],
        "startTime": _iso(t0),
        "endTime": _iso(t1),
        "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"},
    }
    if mlflow_runs:
        props["identifier"] = [f"mlflow-run:{r}" for r in mlflow_runs]
    action = crate.add_action(wf, object=in_entities, result=out_entities, properties=props)
    crate.root_dataset.append_to("mentions", action)
    crate.root_dataset["name"] = name
    crate.root_dataset["description"] = f"Workflow Run RO-Crate of aquaflow for {name}"
    crate.root_dataset["license"] = config.get("source", {}).get("license", "unknown")
    crate.root_dataset["datePublished"] = _iso(t1)
    profiles = []
    for key, title in (
        ("process", "Process Run Crate"),
        ("workflow", "Workflow Run Crate"),
        ("wroc", "Workflow RO-Crate"),
    ):
        url = PROFILES[key]
        profiles.append(
            crate.add_jsonld(
                {"@id": url, "@type": "CreativeWork", "name": title, "version": url.rsplit("/", 1)[1]}
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
