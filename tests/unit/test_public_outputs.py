"""Published outputs leak nothing local: no credentials or query strings in any URI written to a model
card, MLflow params or an RO-Crate, and no absolute local path in a crate."""

from __future__ import annotations

import json
import zipfile

import pytest

from aquaflow.io import public_uri, redact_uri
from aquaflow.models import artifacts
from aquaflow.monitoring import tracking
from aquaflow.standards import provenance

from ..conftest import REPO

SECRET = "s3cr3t-T0KEN"
TOKEN_URL = f"https://alice:{SECRET}@data.example.org:8443/zooscan/run.zip?sig={SECRET}&x=1#frag"


@pytest.mark.parametrize(
    ("given", "redacted", "public"),
    [
        (
            TOKEN_URL,
            "https://data.example.org:8443/zooscan/run.zip",
            "https://data.example.org:8443/zooscan/run.zip",
        ),
        (f"s3://key:{SECRET}@bucket/models/m.pt", "s3://bucket/models/m.pt", "s3://bucket/models/m.pt"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("models:/aquaflow_lake/1", "models:/aquaflow_lake/1", "models:/aquaflow_lake/1"),
        ("doi:10.5281/zenodo.1/x.zip", "doi:10.5281/zenodo.1/x.zip", "doi:10.5281/zenodo.1/x.zip"),
        ("/work/flow/results/uc/model.pt", "/work/flow/results/uc/model.pt", "results/uc/model.pt"),
        ("/home/alice/private/x.pt", "/home/alice/private/x.pt", "x.pt"),
        (
            "sqlite:////work/flow/results/mlflow.db",
            "sqlite:////work/flow/results/mlflow.db",
            "sqlite:///results/mlflow.db",
        ),
        (
            "sqlite:////work/store/mlflow.db",
            "sqlite:////work/store/mlflow.db",
            "sqlite:///../store/mlflow.db",
        ),
        ("sqlite:///results/mlflow.db", "sqlite:///results/mlflow.db", "sqlite:///results/mlflow.db"),
        ("letterbox to square", "letterbox to square", "letterbox to square"),
    ],
)
def test_uri_forms(given, redacted, public):
    assert redact_uri(given) == redacted
    assert public_uri(given, "/work/flow") == public
    if given.startswith("sqlite:"):  # a published store opens, from the workflow's folder, as the store
        assert tracking.store_uri(public, "/work/flow") == tracking.store_uri(given, "/work/flow")
        assert tracking.store_uri(public, "/work/flow").startswith("sqlite:////work/")


def test_a_model_card_never_carries_a_token(tmp_path):
    card = {
        "id": "ab" * 32,
        "arch": "lcnet_050",
        "classes": ["a", "b"],
        "input_size": 32,
        "format": "safetensors",
        "weights": "model.safetensors",
        "normalization": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
        "imported_from": {"source": "url", "url": TOKEN_URL},
        "mlflow": {"tracking_uri": f"https://bob:{SECRET}@mlflow.example.org/?token={SECRET}", "run_id": "r"},
    }
    artifacts.write_card(card, tmp_path / "model_card.json")
    text = (tmp_path / "model_card.json").read_text()
    assert SECRET not in text and "alice" not in text
    back = json.loads(text)
    assert back["imported_from"]["url"] == "https://data.example.org:8443/zooscan/run.zip"
    assert back["mlflow"]["tracking_uri"] == "https://mlflow.example.org/"


def test_mlflow_params_never_carry_a_token(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with tracking.run(uri, "limits") as active:
        tracking.log_params({"source": {"kind": "url", "url": TOKEN_URL}, "training": {"epochs": 2}})
        run_id = active.info.run_id
    params = tracking.client(uri).get_run(run_id).data.params
    assert params["source.url"] == "https://data.example.org:8443/zooscan/run.zip"
    assert params["training.epochs"] == "2"
    assert not [v for v in params.values() if SECRET in v]


def test_a_crate_holds_no_local_path_and_no_token(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the workflow's folder
    (tmp_path / "results").mkdir()
    (tmp_path / "results/card.json").write_text(json.dumps({"id": "ab" * 32}))
    big = tmp_path / "results/predictions.parquet"
    big.write_bytes(b"x" * 3000)  # over max_copy_mb: described, not copied
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir(exist_ok=True)
    (outside / "dwca.zip").write_bytes(b"PK")
    cfg = {
        "source": {"kind": "url", "url": TOKEN_URL, "license": "CC-BY-4.0"},
        "mlflow": {"tracking_uri": f"sqlite:///{tmp_path}/results/mlflow.db"},
        "campaigns": {"c1": {"inputs": [{"path": str(outside / "images")}]}},
    }
    provenance.write(
        tmp_path / "crate.zip",
        name="uc campaign c1",
        snakefile=REPO / "Snakefile",
        rule_files=[],
        config=cfg,
        inputs={"model card": tmp_path / "results/card.json"},
        outputs={"predictions": big, "dwca": outside / "dwca.zip"},
        mlflow_runs=["0123abcd"],
        start=1_700_000_000,
        end=1_700_000_600,
        max_copy_mb=0.001,
    )
    with zipfile.ZipFile(tmp_path / "crate.zip") as zf:
        texts = {
            n: zf.read(n).decode("utf-8", "replace") for n in zf.namelist() if not n.startswith("workflow/")
        }
    for name, text in texts.items():
        assert str(tmp_path) not in text and str(outside) not in text, name
        assert SECRET not in text and "alice" not in text, name
    meta = texts["ro-crate-metadata.json"]
    assert "not copied (3000 bytes): results/predictions.parquet" in meta
    config = texts["config/resolved_config.yaml"]
    assert "https://data.example.org:8443/zooscan/run.zip" in config
    assert "sqlite:///results/mlflow.db" in config  # a store that opens from the workflow's folder
