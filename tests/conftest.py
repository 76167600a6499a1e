"""Shared fixtures: the repository, the real FlowCam demo images, and a Snakemake runner."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from aquaflow.data.fetch import package_root  # noqa: E402

from . import snakemake_fork  # noqa: E402

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def pytest_collection_modifyitems(items) -> None:
    """The long files first (cluster, then workflow, then unit tests), so that xdist workers, which
    take whole files in this order, do not finish on one long file while the other waits."""
    rank = {"cluster": 0, "workflow": 1}
    items.sort(key=lambda item: rank.get(item.path.parent.name, 2))


@pytest.fixture(scope="session", autouse=True)
def _aquaflow_cache(tmp_path_factory) -> None:
    """One cache of derived files (aquaflow.io.cache_dir: exported ONNX graphs) for the whole run,
    as on one machine, kept out of ~/.cache: every worker, Snakemake job and Slurm job shares it."""
    os.environ["AQUAFLOW_CACHE"] = str(run_folder(tmp_path_factory) / "aquaflow-cache")


def run_folder(tmp_path_factory) -> Path:
    """The pytest run's temporary folder, shared by every xdist worker (above each one's own)."""
    root = tmp_path_factory.getbasetemp()
    return root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root


@pytest.fixture(autouse=True)
def _mlflow_env_per_test():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI (and the registry's) to os.environ, and
    aquaflow lets that variable win: drop what a test left so the next one uses its own store."""
    keys = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")
    before = {k: os.environ.get(k) for k in keys}
    yield
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _pillow_bomb_guard_kept():
    """Pillow's decompression-bomb limit is process-wide, and some libraries switch it off when
    called (SAHI's image readers set it to None): a test that lets that leak fails, because the
    xdist worker's next test file would then run without the guard the product relies on."""
    from PIL import Image

    before = Image.MAX_IMAGE_PIXELS
    yield
    after, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, before
    assert after == before, f"this test left PIL.Image.MAX_IMAGE_PIXELS = {after!r} (was {before!r})"


@contextlib.contextmanager
def local_s3(bucket: str) -> Iterator[tuple[str, Any]]:
    """A moto S3 server on 127.0.0.1 with one bucket; yields (endpoint URL, boto3 client)."""
    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=bucket)
        yield endpoint, client
    finally:
        server.stop()


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def planktonclas_resources() -> Path:
    """The planktonclas package's resources folder (105 real FlowCam images, 6 classes)."""
    return package_root("planktonclas") / "resources"


def tiny_usecase(**overrides) -> dict:
    """The FlowCam use case with a tiny training budget (CPU, seconds)."""
    uc = yaml.safe_load((REPO / "config/usecases/flowcam.yaml").read_text())
    uc["training"].update(
        {
            "epochs": 3,
            "batch_size": 16,
            "early_stopping": {"patience": 0},
            "freeze_epochs": 0,
            "backbone_lr_scale": 1.0,
        }
    )
    # random init (tests never depend on the demo's pretrained weights), schema-default mean/std
    uc["model"].update({"arch": "lcnet_050", "input_size": 64, "pretrained": None})
    uc["model"].pop("mean", None)
    uc["model"].pop("std", None)
    for campaign in uc.get("campaigns", {}).values():  # the DwC-A needs a sample table (test_standards)
        campaign.pop("samples", None)
    for key, value in overrides.items():
        uc[key] = value
    return uc


def write_workdir(workdir: Path, usecases: dict[str, dict], **main) -> Path:
    """A Snakemake working directory: config/config.yaml plus one file per use case."""
    (workdir / "config" / "usecases").mkdir(parents=True, exist_ok=True)
    names = {}
    for name, uc in usecases.items():
        path = workdir / "config" / "usecases" / f"{name}.yaml"
        path.write_text(yaml.safe_dump(uc, sort_keys=False))
        names[name] = f"config/usecases/{name}.yaml"
    cfg = {"usecases": names, "results": "results", "resources": "resources", **main}
    (workdir / "config" / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return workdir


def workflow_cmd(workdir: Path, *args: str) -> list[str]:
    """The snakemake command line for the repository's workflow run in `workdir`."""
    return [*SNAKEMAKE, "--snakefile", str(REPO / "Snakefile"), "--directory", str(workdir), *args]


def run_snakemake(
    workdir: Path, *args: str, check: bool = True, env: dict | None = None, timeout: int = 1200
) -> subprocess.CompletedProcess:
    """Run the real workflow in `workdir` (its own config, no profile from the repository), as
    `python -m snakemake` forked from a process that has imported Snakemake (tests/snakemake_fork)."""
    cmd = workflow_cmd(
        workdir,
        *args,  # before --resources, which would swallow positional targets
        "--cores",
        "2",
        "--resources",
        "gpu=1",
    )
    full_env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    full_env["PYTHONPATH"] = str(REPO / "scripts")  # this checkout's library, whatever is installed
    full_env.update(env or {})
    if snakemake_fork.forkable(full_env, str(REPO / "scripts")):
        proc = snakemake_fork.run(cmd[len(SNAKEMAKE) :], workdir, full_env, timeout)
    else:
        proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=full_env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    return proc


FLOWCAM_TRAINED = (
    "results/flowcam/model/model_card.json",
    "results/flowcam/model/training_curve.png",
    "results/flowcam/eval/metrics.json",
    "results/flowcam/eval/confusion_matrix.png",
)


def built_once(tmp_path_factory, name: str, build: Callable[[Path], object]) -> Path:
    """The folder `name`, filled by `build(folder)` once per pytest run, shared by every xdist
    worker: the first one to ask builds it under a file lock, the others wait and reuse it (a failed
    build leaves no completion mark, so the next one to ask builds again). Treat it as read-only."""
    root = run_folder(tmp_path_factory)
    folder, done = root / name, root / f"{name}.done"
    with FileLock(root / f"{name}.lock"):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            build(folder)
            done.touch()
    return folder


@pytest.fixture(scope="session")
def flowcam_trained(tmp_path_factory) -> Path:
    """A workdir where the workflow has fetched, prepared, trained and evaluated `tiny_usecase()`
    (FlowCam demo, lcnet_050, 64 px, 3 epochs), once per pytest run; no campaign has run.
    Do not write into it: take a copy with `trained_copy`, which then runs only what comes after
    training (the model is up to date there for Snakemake: same params, code, inputs, mtimes)."""

    def build(work: Path) -> None:
        run_snakemake(write_workdir(work, {"flowcam": tiny_usecase()}), *FLOWCAM_TRAINED)

    return built_once(tmp_path_factory, "flowcam_trained", build)


def trained_copy(flowcam_trained: Path, dest: Path, uc: dict | None = None) -> Path:
    """A copy of the `flowcam_trained` workdir, with the use case `uc` when given (tiny_usecase()
    with other campaigns, inference or export settings: what trains must stay as it is, or it
    retrains)."""
    shutil.copytree(flowcam_trained, dest, symlinks=True)
    return write_workdir(dest, {"flowcam": uc}) if uc is not None else dest


@pytest.fixture(scope="session")
def flowcam_model(flowcam_trained) -> Path:
    """The model folder of `flowcam_trained` (model.safetensors, model_card.json, history.tsv; do
    not write into it), for a use case given a model: `uc["model"] |= given_model(flowcam_model)`."""
    return flowcam_trained / "results/flowcam/model"


def given_model(folder: Path) -> dict:
    """The `model` section of a use case that predicts with a model folder trained elsewhere."""
    return {"source": "path", "path": str(folder)}


@pytest.fixture
def copy_tree():
    def copy(src: Path, dst: Path) -> Path:
        shutil.copytree(src, dst)
        return dst

    return copy


# --- standards: RO-Crate validation offline ----------------------------------------------------------
RO_CRATE_11_CONTEXT = "https://w3id.org/ro/crate/1.1/context"


def validate_rocrate(
    crate_zip: Path, cache_dir: Path, profile: str = "workflow-run-crate-0.5", severity: str = "REQUIRED"
) -> list[str]:
    """roc-validator's issues (at `severity`: REQUIRED, RECOMMENDED or OPTIONAL and above) for a crate,
    with no network: the RO-Crate 1.1 JSON-LD
    context (tests/data/jsonld, from ResearchObject/ro-crate docs/_specification/1.1) is put in the
    validator's own HTTP cache and the validator runs in its offline mode."""
    import io

    import requests
    from rocrate_validator import models, services
    from rocrate_validator.utils.http import HttpRequester
    from urllib3.response import HTTPResponse

    requester = HttpRequester.initialize_cache(cache_path=str(cache_dir), offline=True)
    body = (REPO / "tests/data/jsonld/ro-crate-1.1-context.jsonld").read_bytes()
    headers = {"Content-Type": "application/ld+json"}
    for accept in (
        "application/ld+json, application/json",
        "application/ld+json, application/json, */*;q=0.1",
    ):
        resp = requests.Response()
        resp.status_code, resp.reason, resp.url, resp._content = 200, "OK", RO_CRATE_11_CONTEXT, body
        resp.headers.update(headers)
        resp.request = requests.Request("GET", RO_CRATE_11_CONTEXT, headers={"Accept": accept}).prepare()
        resp.raw = HTTPResponse(
            body=io.BytesIO(body),
            status=200,
            headers=headers,
            preload_content=False,
            request_url=RO_CRATE_11_CONTEXT,
        )
        requester.session.cache.save_response(resp)
    settings = services.ValidationSettings(
        rocrate_uri=str(crate_zip),
        profile_identifier=profile,
        requirement_severity=models.Severity[severity],
        offline=True,
        cache_path=cache_dir,
        cache_max_age=-1,
    )
    result = services.validate(settings)
    return [f"{i.severity.name}: {i.message}" for i in result.get_issues()]


def provenance_run_crate_jobs(crate_zip: Path, work: Path) -> dict[str, int]:
    """Jobs per rule of a campaign crate's CreateActions from Snakemake's records, after checking the
    crate validates as a Provenance Run Crate and each job's outputs carry the SHA-256 of the file
    they name in `work` (the workflow's folder)."""
    import zipfile

    from rocrate.rocrate import ROCrate

    from aquaflow.io import sha256_file

    assert validate_rocrate(crate_zip, work / "http-cache", "provenance-run-crate-0.5") == []
    with zipfile.ZipFile(crate_zip) as zf:
        zf.extractall(work / "crate")
    crate = ROCrate(work / "crate")
    actions = [e for e in crate.get_entities() if e.type == "CreateAction"]
    jobs = [a for a in actions if a["instrument"].id != crate.mainEntity.id]
    counts: dict[str, int] = {}
    for job in jobs:
        assert job["startTime"] <= job["endTime"]
        rule = job["instrument"]["name"].removeprefix("rule ")
        counts[rule] = counts.get(rule, 0) + 1
        made = job.get("result") or []
        for entity in made if isinstance(made, list) else [made]:
            if (work / "crate" / entity.id).is_file():  # packed in the crate: must equal its record
                assert entity["sha256"] == sha256_file(work / "crate" / entity.id), entity.id
    return counts
