"""Drift monitoring and MLflow tracking in the real workflow, against a real `mlflow server` on loopback.

1. The FlowCam demo use case (real planktonclas images, tiny budget) trains, registers its model,
   builds the drift reference from the training split and runs one campaign with two folders:
   the held-out val+test images (in distribution) and all images darkened and blurred as another
   camera would see them. on_drift: warn -> the workflow completes and only the shifted batch is flagged.
2. on_drift: fail -> the workflow stops, naming the shifted batch.
3. A second use case without data loads the registered model (model.source: mlflow) and runs a
   campaign; its MLflow inference run names the registry version.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from mlflow.tracking import MlflowClient

from aquaflow.data import imaging
from aquaflow.data.fetch import package_root

from ..conftest import REPO, run_snakemake, tiny_usecase, write_workdir

pytestmark = pytest.mark.workflow
MLFLOW = str(Path(sys.executable).with_name("mlflow"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1 and a random free port; killed (its process group) at the end."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    log = (root / "server.log").open("w")
    cmd = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    cmd += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    cmd += ["--artifacts-destination", str(root / "artifacts")]
    # no job runner: its huey consumers serve GenAI jobs, not tracking or the registry
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            raise RuntimeError(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.2)  # a poll, not a wait: the loop ends at the first healthy answer
    yield uri
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    log.close()


SECRET = "s3cr3t-T0KEN"


def _env(uri: str) -> dict:
    """Step scripts import this checkout's library (not an installed copy) and log to the server,
    through a URI with credentials that nothing may publish (the server ignores them)."""
    with_token = uri.replace("http://", f"http://alice:{SECRET}@")
    return {"MLFLOW_TRACKING_URI": with_token, "PYTHONPATH": str(REPO / "scripts")}


def _campaign_images(work: Path) -> None:
    res = package_root("planktonclas") / "resources"
    held_out = []
    for split in ("val", "test"):
        held_out += [
            line.split()[0] for line in (res / f"dataset_files/{split}.txt").read_text().splitlines() if line
        ]
    (work / "incoming/heldout").mkdir(parents=True)
    (work / "incoming/shifted").mkdir(parents=True)
    for rel in held_out:
        shutil.copy(res / "demo-images" / rel, work / "incoming/heldout" / Path(rel).name)
    for path in sorted((res / "demo-images").glob("*/*.jpg")):  # another camera: darker and out of focus
        img = imaging.load(path).image
        img = (cv2.GaussianBlur(img, (0, 0), 2.0) * 0.5).astype(np.uint8)
        (work / "incoming/shifted" / f"{path.stem}.png").write_bytes(imaging.encode(img))


def _usecase(on_drift: str) -> dict:
    uc = tiny_usecase()
    uc["inference"] = {"embeddings": True, "top_k": 3}
    uc["campaigns"] = {"survey": {"inputs": [{"kind": "folder", "path": "incoming"}]}}
    uc["export"]["ecotaxa"]["enabled"] = False
    uc["drift"] = {"enabled": True, "on_drift": on_drift, "batch": {"by": "folder", "min_size": 10}}
    return uc


TARGETS = [
    "results/flowcam/campaigns/survey/drift/policy.json",
    "results/flowcam/campaigns/survey/mlflow_run.json",
    "results/flowcam/eval/metrics.json",
]
SCATTER = ("--set-scatter", "infer=1")  # one shard: sharding is what test_bulk_resume tests


@pytest.fixture(scope="module")
def trained(server, tmp_path_factory):
    work = tmp_path_factory.mktemp("drift_workflow")
    _campaign_images(work)
    write_workdir(work, {"flowcam": _usecase("warn")})
    run_snakemake(work, *TARGETS, *SCATTER, env=_env(server))
    return work, work / "results/flowcam"


def test_warn_completes_and_flags_only_the_shifted_batch(trained):
    _, res = trained
    rep = json.loads((res / "campaigns/survey/drift/drift.json").read_text())
    batches = {b["batch"]: b for b in rep["batches"]}
    assert set(batches) == {"heldout", "shifted"}
    assert batches["heldout"]["n"] == 23 and batches["shifted"]["n"] == 105
    assert batches["heldout"]["drift"] is False
    assert batches["shifted"]["drift"] is True
    assert rep["overall"]["drifted_batches"] == ["shifted"]
    policy = json.loads((res / "campaigns/survey/drift/policy.json").read_text())
    assert policy == {"drifted_batches": ["shifted"], "policy": "warn"}
    ref = json.loads((res / "model/drift_reference.json").read_text())
    assert (
        ref["images"] == 82
        and ref["model_id"] == json.loads((res / "model/model_card.json").read_text())["id"]
    )


def test_report_shows_the_driftwatch_plot(trained):
    work, _ = trained
    run_snakemake(
        work, *TARGETS, *SCATTER, "--report", "report.html", env={"PYTHONPATH": str(REPO / "scripts")}
    )
    html = (work / "report.html").read_text()
    assert "driftwatch.png" in html and "DriftWatch for campaign" in html and "drift.tsv" in html


def test_training_run_and_registered_model(trained, server):
    _, res = trained
    text = (res / "model/model_card.json").read_text()
    card = json.loads(text)
    assert card["mlflow"]["tracking_uri"] == server and SECRET not in text and "alice" not in text
    client = MlflowClient(server, registry_uri=server)
    run = client.get_run(card["mlflow"]["run_id"])
    assert "test_accuracy" in run.data.metrics  # the evaluation joined the training run
    assert not [v for v in run.data.params.values() if SECRET in v]
    assert run.data.params["model.arch"] == "lcnet_050" and run.data.params["training.epochs"] == "3"
    assert {"val_macro_f1", "train_loss", "best_val_macro_f1"} <= set(run.data.metrics)
    top = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model", "drift_reference", "model_card.json", "training_curve.png"} <= top
    assert {a.path for a in client.list_artifacts(run.info.run_id, "drift_reference")} == {
        "drift_reference/drift_reference.npz",
        "drift_reference/drift_reference.json",
    }
    mv = client.get_model_version("aquaflow_flowcam", "1")
    assert mv.run_id == run.info.run_id and mv.source == f"runs:/{run.info.run_id}/model"
    assert mv.tags["model_id"] == card["id"] and "lcnet_050" in mv.description


def test_inference_run_of_the_campaign(trained, server):
    _, res = trained
    text = (res / "campaigns/survey/mlflow_run.json").read_text()
    info = json.loads(text)
    assert info["tracking_uri"] == server and SECRET not in text and "alice" not in text
    assert info["registered_model"] == "aquaflow_flowcam" and info["model_version"] == "1"
    run = MlflowClient(server).get_run(info["run_id"])
    assert run.data.tags["step"] == "inference" and run.data.tags["campaign"] == "survey"
    m = run.data.metrics
    assert m["images_seen"] == 128 and m["images_predicted"] == 128 and m["images_rejected"] == 0
    assert m["images_per_second"] > 0 and m["drift.batches_drifted"] == 1 and m["drift.batches_tested"] == 2
    assert run.data.tags["drifted_batches"] == "shifted"


def test_fail_policy_stops_the_workflow_naming_the_batch(trained, server):
    work, res = trained
    uc = yaml.safe_load((work / "config/usecases/flowcam.yaml").read_text())
    uc["drift"]["on_drift"] = "fail"
    (work / "config/usecases/flowcam.yaml").write_text(yaml.safe_dump(uc, sort_keys=False))
    proc = run_snakemake(work, *TARGETS, *SCATTER, check=False, env=_env(server))
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "drift detected in 1 batch(es)" in out and "shifted" in out and "on_drift: fail" in out
    assert not (res / "campaigns/survey/drift/policy.json").exists()
    # only the policy reran: the drift tests and the model are untouched
    assert "rule train:" not in out and "rule drift:" not in out


def test_inference_with_the_model_from_the_registry(trained, server, tmp_path):
    work, _ = trained
    uc = tiny_usecase()
    for key in ("source", "dataset", "training"):
        uc.pop(key, None)
    uc["model"] = {"source": "mlflow", "uri": "models:/aquaflow_flowcam/1"}
    uc["campaigns"] = {"year2": {"inputs": [{"kind": "folder", "path": str(work / "incoming/heldout")}]}}
    uc["export"]["ecotaxa"]["enabled"] = False
    write_workdir(tmp_path, {"lab": uc})
    run_snakemake(tmp_path, "results/lab/campaigns/year2/mlflow_run.json", *SCATTER, env=_env(server))
    card = json.loads((tmp_path / "results/lab/model/model_card.json").read_text())
    assert card["imported_from"]["uri"] == "models:/aquaflow_flowcam/1"
    info = json.loads((tmp_path / "results/lab/campaigns/year2/mlflow_run.json").read_text())
    assert info["model_uri"] == "models:/aquaflow_flowcam/1" and info["model_version"] == "1"
    run = MlflowClient(server).get_run(info["run_id"])
    assert run.data.tags["model_version"] == "1" and run.data.tags["registered_model"] == "aquaflow_flowcam"
    assert run.data.params["model.id"] == card["id"] and run.data.metrics["images_predicted"] == 23
