"""Classification shards pinned down: the run id (what it hashes and what it ignores), the loader
defaults, one Snakemake shard step end to end and the batches the evaluation reads."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from aquaflow.backends import load_predictor
from aquaflow.backends import torch_model as models
from aquaflow.data import imaging
from aquaflow.engine import infer
from aquaflow.io import sha256_file

from .test_infer import CLASSES, tiny_model  # noqa: F401  (a pytest fixture)

PARAMS = {"top_k": 2, "embeddings": False, "max_pixels": 10**6, "backend": "eager", "device": "cpu"}


def _images(folder, n=5):
    folder.mkdir()
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        p = folder / f"{i}.png"
        p.write_bytes(imaging.encode(rng.integers(0, 255, (20 + i, 24, 3), dtype=np.uint8)))
        paths.append(str(p))
    return paths


def test_run_identity_hashes_model_inputs_and_prediction_settings(tmp_path):
    table = tmp_path / "inputs.parquet"
    pd.DataFrame({"seq": [0], "source": ["a.png"]}).to_parquet(table)
    digest = sha256_file(table)
    blob = f"m1:{digest}:" + repr(
        [("top_k", 2), ("embeddings", False), ("max_pixels", 10**6), ("backend", "eager")]
    )
    want = hashlib.sha256(blob.encode()).hexdigest()[:16]
    assert infer.run_identity("m1", table, PARAMS) == want
    assert infer.run_identity("m1", None, PARAMS, digest) == want
    assert infer.run_identity("m1", table, {**PARAMS, "device": "cuda", "batch_size": 9}) == want
    for key, value in (("top_k", 3), ("embeddings", True), ("max_pixels", 5), ("backend", "onnx")):
        assert infer.run_identity("m1", table, {**PARAMS, key: value}) != want, key
    assert infer.run_identity("m2", table, PARAMS) != want


def test_loader_settings_on_cpu():
    assert infer.loader_settings({"device": "cpu"}, 8) == (64, 2)
    assert infer.loader_settings({"device": "cpu", "batch_size": None, "workers": None}, 3) == (64, 0)
    assert infer.loader_settings({"device": "cpu", "batch_size": 10, "workers": 0}, 8) == (10, 0)
    assert infer.loader_settings({"device": "cpu", "workers": 3}, 1) == (64, 3)


def test_shard_step_predicts_its_block_with_the_run_id(tiny_model, tmp_path):  # noqa: F811
    weights, card = tiny_model
    paths = [*_images(tmp_path / "img"), str(tmp_path / "missing.png")]
    table = pd.DataFrame({"seq": range(6), "source": paths, "station": list("abcdef")})
    table.to_parquet(tmp_path / "inputs.parquet")
    out = {k: tmp_path / "shards" / f"2-of-2.{k}" for k in ("predictions", "rejected", "summary")}
    out["predictions"].parent.mkdir()
    params = {**PARAMS, "batch_size": 2, "workers": 0}
    summary = infer.run_shard_step(
        inputs_path=tmp_path / "inputs.parquet",
        weights=weights,
        card=card,
        scatteritem="2-of-2",
        out=out,
        params=params,
        threads=1,
    )
    pred = pd.read_parquet(out["predictions"])
    rejected = pd.read_parquet(out["rejected"])
    assert pred["seq"].tolist() == [3, 4] and pred["station"].tolist() == ["d", "e"]
    assert rejected["seq"].tolist() == [5] and rejected["reason"].tolist() == [imaging.MISSING]
    assert {"top1_label", "top2_label"} <= set(pred) and "top3_label" not in pred and "embedding" not in pred
    run_id = infer.run_identity(models.model_id(weights), tmp_path / "inputs.parquet", params)
    assert set(pred["run_id"]) == {run_id} and set(pred["model_id"]) == {models.model_id(weights)}
    assert json.loads(out["summary"].read_text()) == json.loads(json.dumps(summary))
    assert (summary["predicted"], summary["rejected"]) == (2, 1)


def test_batches_carry_probabilities_features_and_rejections(tiny_model, tmp_path):  # noqa: F811
    weights, card = tiny_model
    pred = load_predictor(weights, card, "cpu", 1, "eager", True)
    paths = _images(tmp_path / "img", 3)
    table = pd.DataFrame(
        {"seq": range(5), "source": [str(tmp_path / "no.png"), *paths, str(tmp_path / "no2.png")]}
    )
    batches = list(infer.iter_batches(table, pred, 2, 0, max_pixels=10**6))
    assert [b["index"].tolist() for b, _, _ in batches] == [[1], [2, 3], []]
    assert [len(b["rejected"]) for b, _, _ in batches] == [1, 0, 1]
    for batch, probs, feats in batches:
        assert probs.shape == (len(batch["index"]), len(CLASSES)) and len(feats) == len(batch["index"])
        assert np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert batches[2][1].dtype == np.float32 and batches[2][2].shape == (0, 0)
    tiny = list(infer.iter_batches(table.iloc[1:2], pred, 2, 0, max_pixels=100))
    assert tiny[0][0]["rejected"][0][1] == imaging.TOO_LARGE
    alone = list(infer.iter_batches(table.iloc[1:2], pred, 2, 0))  # default max_pixels
    assert alone[0][1].shape == (1, len(CLASSES))


def test_loader_settings_on_a_gpu_feed_it_with_threads_minus_one_workers():
    # pick_device("cuda") names the device without touching one: the GPU defaults are testable here
    assert infer.loader_settings({"device": "cuda"}, 8) == (256, 7)
    assert infer.loader_settings({"device": "cuda", "batch_size": None, "workers": None}, 1) == (256, 0)
    assert infer.loader_settings({"device": "cuda", "batch_size": 32, "workers": 2}, 8) == (32, 2)


def test_shard_step_from_a_staged_bundle_equals_the_local_run_and_reports_progress(tiny_model, tmp_path):  # noqa: F811
    """No shared file system: the images are gone once staged, so every row must be read from the
    bundle; the predictions (ids, image statistics, run id) equal those of the local run; progress
    goes to the log stream."""
    import io
    import shutil

    from aquaflow.engine import staging

    weights, card = tiny_model
    table = pd.DataFrame({"seq": range(4), "source": _images(tmp_path / "img", 4)})
    table.to_parquet(tmp_path / "inputs.parquet")
    params = {**PARAMS, "batch_size": 3, "workers": 0, "embeddings": True, "top_k": 3}

    def step(inputs_path, name, stream=None):
        out = {k: tmp_path / name / f"1-of-1.{k}" for k in ("predictions", "rejected", "summary")}
        out["predictions"].parent.mkdir()
        summary = infer.run_shard_step(
            inputs_path=inputs_path, weights=weights, card=card, scatteritem="1-of-1", out=out,
            params=params, threads=1, log_stream=stream,
        )  # fmt: skip
        return summary, pd.read_parquet(out["predictions"])

    _, local = step(tmp_path / "inputs.parquet", "local")
    staging.stage(tmp_path / "inputs.parquet", {"1-of-1": tmp_path / "b.zip"})
    shutil.rmtree(tmp_path / "img")
    stream = io.StringIO()
    summary, staged = step(tmp_path / "b.zip", "staged", stream)
    assert (summary["predicted"], summary["rejected"]) == (4, 0)
    pd.testing.assert_frame_equal(staged.drop(columns="embedding"), local.drop(columns="embedding"))
    assert np.allclose(np.stack(staged["embedding"]), np.stack(local["embedding"]), atol=1e-5)
    assert "top3_label" in staged and set(staged["run_id"]) == {
        infer.run_identity(models.model_id(weights), tmp_path / "inputs.parquet", params)
    }
    assert "batches" in stream.getvalue() and "2/2" in stream.getvalue()


def test_run_shard_passes_its_settings_through(tiny_model, tmp_path):  # noqa: F811
    weights, card = tiny_model
    paths = _images(tmp_path / "img", 3)
    table = pd.DataFrame({"seq": range(3), "source": paths})
    out = [tmp_path / n for n in ("p.parquet", "r.parquet", "s.json")]
    infer.run_shard(table, weights, card, *out, top_k=1, batch_size=2, workers=0, device="cpu",
                    max_pixels=24 * 21, run_id="rid", backend="eager", embeddings=True)  # fmt: skip
    pred, rejected = pd.read_parquet(out[0]), pd.read_parquet(out[1])
    assert pred["seq"].tolist() == [0, 1] and rejected["reason"].tolist() == [imaging.TOO_LARGE]
    assert set(pred["run_id"]) == {"rid"} and "top2_label" not in pred and "embedding" in pred
    assert set(pred["model_id"]) == {models.model_id(weights)}


def test_run_shard_defaults_and_the_summary_names_the_model(tiny_model, tmp_path):  # noqa: F811
    weights, card = tiny_model
    table = pd.DataFrame({"seq": range(2), "source": _images(tmp_path / "img", 2)})
    out = [tmp_path / n for n in ("p.parquet", "r.parquet", "s.json")]
    summary = infer.run_shard(table, weights, card, *out)  # every keyword at its default
    pred = pd.read_parquet(out[0])
    assert set(pred["run_id"]) == {""} and "embedding" not in pred and "top4_label" in pred
    assert summary["model_id"] == models.model_id(weights) == json.loads(out[2].read_text())["model_id"]


def test_shard_step_logs_its_loader_settings_and_applies_max_pixels(tiny_model, tmp_path, caplog):  # noqa: F811
    import logging

    weights, card = tiny_model
    table = pd.DataFrame({"seq": range(3), "source": _images(tmp_path / "img", 3)})
    table.to_parquet(tmp_path / "inputs.parquet")
    out = {k: tmp_path / f"1-of-1.{k}" for k in ("predictions", "rejected", "summary")}
    params = {**PARAMS, "max_pixels": 24 * 21}  # no batch_size / workers: the defaults for 4 threads
    with caplog.at_level(logging.INFO, logger="aquaflow.engine.infer"):
        summary = infer.run_shard_step(
            inputs_path=tmp_path / "inputs.parquet", weights=weights, card=card, scatteritem="1-of-1",
            out=out, params=params, threads=4,
        )  # fmt: skip
    assert "batch size 64, 1 decode worker(s), 4 thread(s)" in caplog.messages
    assert (summary["predicted"], summary["rejected"]) == (2, 1)
    assert pd.read_parquet(out["rejected"])["reason"].tolist() == [imaging.TOO_LARGE]


def test_batches_follow_the_cards_resize_read_paths_and_report_progress(tiny_model, tmp_path):  # noqa: F811
    import io
    import shutil

    weights, card = tiny_model
    paths = _images(tmp_path / "img", 3)
    table = pd.DataFrame({"seq": range(3), "source": paths})
    letterbox = load_predictor(weights, card, "cpu", 1, "eager", True)
    stretch_card = {**json.loads(card.read_text()), "resize": "stretch"}
    stretch = load_predictor(weights, stretch_card, "cpu", 1, "eager", True)
    probs = {
        name: np.concatenate([p for _, p, _ in infer.iter_batches(table, pred, 3, 0)])
        for name, pred in (("letterbox", letterbox), ("stretch", stretch))
    }
    assert not np.allclose(probs["letterbox"], probs["stretch"])  # non-square images: the resize counts
    copies = tmp_path / "copies"
    shutil.copytree(tmp_path / "img", copies)
    shutil.rmtree(tmp_path / "img")
    stream = io.StringIO()
    reads = [str(copies / f"{i}.png") for i in range(3)]
    batches = list(infer.iter_batches(table, letterbox, 3, 0, progress=stream, read_paths=reads))
    assert batches[0][0]["index"].tolist() == [0, 1, 2] and "batches" in stream.getvalue()
    assert np.allclose(batches[0][1], probs["letterbox"], atol=1e-6)
    empty = list(infer.iter_batches(table.assign(source=[str(tmp_path / "no.png")] * 3), letterbox, 3, 0))
    assert empty[0][2].dtype == np.float32 and empty[0][2].shape == (0, 0)


def test_shard_step_loads_the_configured_backend(tiny_model, tmp_path):  # noqa: F811
    weights, card = tiny_model
    table = pd.DataFrame({"seq": range(2), "source": _images(tmp_path / "img", 2)})
    table.to_parquet(tmp_path / "inputs.parquet")
    out = {k: tmp_path / f"1-of-1.{k}" for k in ("predictions", "rejected", "summary")}
    step = {"inputs_path": tmp_path / "inputs.parquet", "weights": weights, "card": card}
    with pytest.raises(ValueError, match="unknown inference backend 'tensorrt'"):
        infer.run_shard_step(**step, scatteritem="1-of-1", out=out, params={**PARAMS, "backend": "tensorrt"},
                             threads=1)  # fmt: skip
    assert not out["predictions"].exists()
