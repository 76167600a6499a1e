"""The shard engine on small data: reconciliation, backends, determinism, FlowCam collages."""

import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import timm

from aquaflow.backends import torch_model as models
from aquaflow.data import flowcam, inputs
from aquaflow.engine import gather, infer
from aquaflow.engine.items import Items, crop_of, shard_slice
from aquaflow.io import write_json
from aquaflow.synthetic.flowcam import write_run
from aquaflow.synthetic.inputs import write_bad_inputs

CLASSES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised small classifier with its card (no training needed here)."""
    d = tmp_path_factory.mktemp("model")
    import torch

    torch.manual_seed(0)
    # random init: this architecture's features are not ~0 in eval mode, so labels differ
    net = timm.create_model("mobilenetv4_conv_small", num_classes=len(CLASSES))
    models.save_weights(net, d / "w.safetensors")
    write_json(
        {
            "arch": "mobilenetv4_conv_small",
            "classes": CLASSES,
            "input_size": 48,
            "normalization": {"mean": [0.5] * 3, "std": [0.25] * 3},
        },
        d / "card.json",
    )
    return d / "w.safetensors", d / "card.json"


def shard(table, model, out, **kw):
    w, c = model
    return infer.run_shard(
        table,
        w,
        c,
        out / "p.parquet",
        out / "r.parquet",
        out / "s.json",
        **{"top_k": 3, "batch_size": 7, "workers": 0, "device": "cpu", **kw},
    )


def test_every_input_ends_in_exactly_one_table(tiny_model, tmp_path):
    expect = write_bad_inputs(tmp_path / "in")
    paths = sorted(expect)
    pd.DataFrame({"path": paths, "site": [f"s{i}" for i in range(len(paths))]}).to_csv(
        tmp_path / "in" / "list.csv", index=False
    )
    table = inputs.build(
        [{"kind": "manifest", "path": str(tmp_path / "in" / "list.csv"), "column": "path"}], tmp_path
    )
    summary = shard(table, tiny_model, tmp_path, embeddings=True, workers=1)
    pred, rej = pd.read_parquet(tmp_path / "p.parquet"), pd.read_parquet(tmp_path / "r.parquet")
    assert summary["seen"] == len(paths) == len(pred) + len(rej)
    got = dict(zip(rej["source"].str.rsplit("/", n=1).str[-1], rej["reason"], strict=True))
    assert got == {k: v for k, v in expect.items() if v is not None}
    assert summary["rejected_by_reason"] == pd.Series(got).value_counts().to_dict()
    assert set(pred["site"]) == {f"s{paths.index(k)}" for k, v in expect.items() if v is None}
    emb = np.stack(pred["embedding"].to_numpy())
    assert emb.shape[0] == len(pred) and emb.shape[1] > 8 and np.isfinite(emb).all()
    assert list(pred["seq"]) == sorted(pred["seq"])


@pytest.mark.parametrize("backend", ["eager", "onnx"])
def test_same_input_twice_is_byte_identical(tiny_model, tmp_path, planktonclas_resources, backend):
    table = inputs.build(
        [{"kind": "folder", "path": str(planktonclas_resources / "demo-images"), "extensions": [".jpg"]}],
        tmp_path,
    )
    shard(table, tiny_model, tmp_path / "a", run_id="r", backend=backend)
    shard(table, tiny_model, tmp_path / "b", run_id="r", workers=2, backend=backend)
    for name in ("p.parquet", "r.parquet"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert len(pd.read_parquet(tmp_path / "a" / "p.parquet")) == 105


def test_shard_count_does_not_change_gathered_rows(tiny_model, tmp_path, planktonclas_resources):
    table = inputs.build(
        [{"kind": "dataset", "extensions": [".jpg"]}], planktonclas_resources / "demo-images"
    )
    gathered = {}
    for n in (1, 3, 4):
        parts = []
        for i in range(1, n + 1):
            out = tmp_path / f"{n}" / f"{i}"
            shard(table.iloc[shard_slice(len(table), f"{i}-of-{n}")], tiny_model, out)
            parts.append(out / "p.parquet")
        gather.merge_tables(parts, tmp_path / f"{n}.parquet")
        gathered[n] = pd.read_parquet(tmp_path / f"{n}.parquet")
    for n in (3, 4):
        a, b = gathered[1], gathered[n]
        pd.testing.assert_frame_equal(
            a.drop(columns=[c for c in a if c.endswith("_prob")]),
            b.drop(columns=[c for c in b if c.endswith("_prob")]),
        )
        np.testing.assert_allclose(a["top1_prob"], b["top1_prob"], atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 200])
def test_shard_slices_partition_rows(n):
    rows = 103
    covered = np.concatenate([np.arange(rows)[shard_slice(rows, f"{i}-of-{n}")] for i in range(1, n + 1)])
    assert np.array_equal(covered, np.arange(rows))


def test_onnx_backend_agrees_with_eager(tiny_model, tmp_path, planktonclas_resources):
    table = inputs.build(
        [{"kind": "dataset", "extensions": [".jpg"]}], planktonclas_resources / "demo-images"
    ).iloc[:40]
    shard(table, tiny_model, tmp_path / "eager", backend="eager")
    shard(table, tiny_model, tmp_path / "onnx", backend="onnx")
    a = pd.read_parquet(tmp_path / "eager" / "p.parquet")
    b = pd.read_parquet(tmp_path / "onnx" / "p.parquet")
    np.testing.assert_allclose(a["top1_prob"], b["top1_prob"], atol=1e-4)
    clear = (a["top1_prob"] - a["top2_prob"]) > 1e-3  # near-ties may flip within tolerance
    assert clear.sum() >= 10 and (a["top1_label"] == b["top1_label"])[clear].all()


@pytest.mark.parametrize("csv", [False, True])
def test_flowcam_run_crops_match_collage_pixels(tiny_model, tmp_path, csv):
    truth = write_run(tmp_path / "run", n_particles=12, per_collage=5, csv=csv)
    table = inputs.build([{"kind": "flowcam", "path": str(tmp_path / "run")}], tmp_path)
    assert len(table) == 12 and table["source"].str.endswith(".tif").all()
    assert list(table["particle_id"]) == [t["particle_id"] for t in truth]
    items = Items(table["source"].tolist(), [crop_of(r) for r in table.to_dict("records")], 48, 10**9)
    for i, t in enumerate(truth):
        crop, _ = items._crop(table["source"][i], crop_of(table.iloc[i].to_dict()))
        assert np.array_equal(crop, t["pixels"]), f"particle {t['particle_id']}"
    shard(table, tiny_model, tmp_path / "out")
    pred = pd.read_parquet(tmp_path / "out" / "p.parquet")
    assert len(pred) == 12 and pred["id"].is_unique
    assert list(pred["particle_id"]) == [t["particle_id"] for t in truth]
    np.testing.assert_allclose(pred["diameter_esd"], [t["diameter_esd"] for t in truth])
    assert list(pred["timestamp"]) == [t["timestamp"] for t in truth]
    names = pq.read_schema(tmp_path / "out" / "p.parquet").names
    assert names[:3] == ["seq", "id", "source"] and {"crop_x", "crop_w", "area_abd"} <= set(names)
    assert list(pred["crop_w"]) == [t["w"] for t in truth]


def test_flowcam_lst_header_is_read_not_assumed(tmp_path):
    write_run(tmp_path, n_particles=3)
    df = flowcam.read_lst(tmp_path / "run.lst")
    assert {"crop_x", "crop_y", "crop_w", "crop_h", "collage", "area_abd"} <= set(df.columns)
    assert df["area_abd"].dtype == "float64" and str(df["id"].dtype) == "Int64"
    bad = tmp_path / "bad.lst"
    bad.write_text("017\nnum-fields|2\nid|int32\nname|string\n1|a|extra\n")
    with pytest.raises(ValueError, match="wrong number of fields"):
        flowcam.read_lst(bad)


def test_compile_backend_agrees_with_eager(tiny_model, tmp_path, planktonclas_resources):
    table = inputs.build(
        [{"kind": "dataset", "extensions": [".jpg"]}], planktonclas_resources / "demo-images"
    ).iloc[:20]
    shard(table, tiny_model, tmp_path / "eager", batch_size=32, backend="eager")
    shard(table, tiny_model, tmp_path / "compile", batch_size=32, backend="compile")
    a = pd.read_parquet(tmp_path / "eager" / "p.parquet")
    b = pd.read_parquet(tmp_path / "compile" / "p.parquet")
    np.testing.assert_allclose(a["top1_prob"], b["top1_prob"], atol=1e-4)


def test_onnx_graph_is_exported_once_per_model_and_machine(
    tiny_model, tmp_path, monkeypatch, planktonclas_resources
):
    """CPU shards of one model export its ONNX graph once into the cache: a shard in a fresh process
    that finds it imports neither timm nor torchvision and predicts the same rows; a corrupt graph
    is exported again; another normalization is another graph, with other probabilities."""
    import json
    import subprocess
    import sys

    from tests.conftest import REPO

    cache = tmp_path / "cache"
    monkeypatch.setenv("AQUAFLOW_CACHE", str(cache))
    demo = planktonclas_resources / "demo-images"
    table = inputs.build([{"kind": "dataset", "extensions": [".jpg"]}], demo).iloc[:20]
    table.to_parquet(tmp_path / "table.parquet")
    shard(table, tiny_model, tmp_path / "first", backend="onnx")
    first = pd.read_parquet(tmp_path / "first" / "p.parquet")
    (graph,) = (cache / "onnx").glob("*.onnx")

    w, c = tiny_model
    code = (
        "import json, sys; import pandas as pd; from aquaflow.engine import infer; "
        f"t = pd.read_parquet({str(tmp_path / 'table.parquet')!r}); o = {str(tmp_path / 'again')!r}; "
        f"infer.run_shard(t, {str(w)!r}, {str(c)!r}, o + '/p.parquet', o + '/r.parquet', o + '/s.json', "
        "top_k=3, batch_size=7, workers=0, device='cpu', backend='onnx'); "
        "print(json.dumps(sorted(m for m in ('timm', 'torchvision') if m in sys.modules)))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout.splitlines()[-1]) == []
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "again" / "p.parquet"), first)
    assert list((cache / "onnx").glob("*.onnx")) == [graph]

    graph.write_bytes(b"not an ONNX graph")
    shard(table, tiny_model, tmp_path / "repaired", backend="onnx")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "repaired" / "p.parquet"), first)
    models.onnx_session(str(graph), 1)  # the cache holds a graph that loads again, not the bad bytes

    card = {**json.loads(c.read_text()), "normalization": {"mean": [0.4] * 3, "std": [0.3] * 3}}
    write_json(card, tmp_path / "card2.json")
    shard(table, (w, tmp_path / "card2.json"), tmp_path / "other", backend="onnx")
    assert len(list((cache / "onnx").glob("*.onnx"))) == 2
    other = pd.read_parquet(tmp_path / "other" / "p.parquet")
    assert not np.allclose(other["top1_prob"], first["top1_prob"], atol=1e-3)


def test_an_unwritable_onnx_cache_costs_only_the_export(tiny_model, tmp_path, monkeypatch, caplog):
    """A cache path that cannot be a folder (here a file): the shard exports in memory, warns, and
    predicts as with a working cache."""
    import torch

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    w, c = tiny_model
    monkeypatch.setenv("AQUAFLOW_CACHE", str(blocker))
    with caplog.at_level("WARNING"):
        a = models.Predictor.load(w, c, "cpu", 1, "onnx")
    assert "ONNX graph not cached" in caplog.text
    monkeypatch.setenv("AQUAFLOW_CACHE", str(tmp_path / "cache"))
    b = models.Predictor.load(w, c, "cpu", 1, "onnx")
    x = torch.randint(0, 256, (3, 3, 48, 48), dtype=torch.uint8)
    np.testing.assert_array_equal(a(x)[0], b(x)[0])
