"""Sound shards on the engine: every recording ends predicted (all its windows) or rejected,
a recording failing mid-stream leaves no rows, gather gives per-file and per-hour tables."""

import json

import numpy as np
import pandas as pd
import pytest

from aquaflow.data import audio
from aquaflow.engine import sound as engine
from tests.sound_models import noise, untrained_cnn
from tests.unit.test_drift import CFG as DRIFT_CFG

RATE = 16000


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return untrained_cnn(tmp_path_factory.mktemp("snd") / "model")


def _recordings(folder):
    folder.mkdir()
    good = [
        noise(folder / "H1_20240601_235958.wav", 4.5, seed=1),  # crosses midnight: 2 UTC hours
        noise(folder / "H2_20240602_000000.flac", 3.25, seed=2),  # not a multiple of the hop
        noise(folder / "plain.wav", 2.0, seed=3),  # no start time in the name
    ]
    (folder / "empty.wav").write_bytes(b"")
    data = good[0].read_bytes()
    (folder / "H1_20240601_000000.wav").write_bytes(data[: len(data) // 3])  # truncated
    cut = noise(folder / "cut.flac", 8.0, seed=4).read_bytes()
    (folder / "cut.flac").write_bytes(cut[: len(cut) // 2])  # fails mid-stream
    return good


def test_shard_and_gather(tmp_path, model):
    good = _recordings(tmp_path / "rec")
    paths = sorted(str(p) for p in (tmp_path / "rec").iterdir())
    inputs = pd.DataFrame({"seq": np.arange(len(paths), dtype="int64"), "source": paths})
    card = json.loads((model / "model_card.json").read_text())
    shard = {
        k: tmp_path / f"s/{k}.{e}"
        for k, e in [("predictions", "parquet"), ("rejected", "parquet"), ("summary", "json")]
    }
    (tmp_path / "s").mkdir()
    settings = {"batch": 3, "audio": {"block_s": 0.5, "hop_s": 1.0, "tail": "pad"}}
    summary = engine.run_shard(inputs, model / "model.safetensors", card, shard, settings)
    spec = engine.window_spec(card, settings["audio"])
    expect = {p.name: audio.covered(spec, round(audio.probe(p, spec).frames))[0] for p in good}
    assert summary["seen"] == 6 and summary["predicted"] == 3 and summary["rejected"] == 3
    assert summary["rejected_by_reason"] == {"decode_error": 1, "truncated": 1, "zero_length": 1}
    assert summary["windows"] == sum(expect.values()) == 5 + 4 + 2
    pred = pd.read_parquet(shard["predictions"])
    assert pred.groupby("file").size().to_dict() == expect  # nothing of cut.flac, though it gave windows
    assert np.allclose(pred.filter(like="p_").sum(axis=1), 1, atol=1e-5)
    assert pred["distance_bin"].between(0, 10).all() and (pred["expected_km"] > 0).all()
    h1 = pred[pred["file"] == "H1_20240601_235958.wav"]
    assert h1["start_utc"].iloc[2] == pd.Timestamp("2024-06-02 00:00:00", tz="UTC")
    assert (h1["station"] == "H1").all() and pred.loc[pred["file"] == "plain.wav", "start_utc"].isna().all()
    last = pred[pred["file"].str.endswith(".flac")].iloc[-1]
    assert (last["start_s"], last["end_s"], last["padded_s"]) == (3.0, 3.25, 0.75)

    out = {k: tmp_path / f"g/{k}" for k in ("predictions", "rejected", "summary", "table", "dataset")}
    out |= {"per_file": tmp_path / "g/per_file.parquet", "per_hour": tmp_path / "g/per_hour.parquet"}
    out |= {"per_file_tsv": tmp_path / "g/per_file.tsv", "per_hour_tsv": tmp_path / "g/per_hour.tsv"}
    (tmp_path / "g").mkdir()
    total = engine.gather(
        predictions=[shard["predictions"]],
        rejected=[shard["rejected"]],
        summaries=[shard["summary"]],
        out=out,
        absent="none",
    )
    assert total["predicted"] + total["rejected"] == total["seen"] == 6
    per_file = pd.read_parquet(out["per_file"]).set_index("file")
    assert per_file["windows"].to_dict() == expect
    n_cols = [c for c in per_file.columns if c.startswith("n_")]
    assert (per_file[n_cols].sum(axis=1) == per_file["windows"]).all()
    occupancy = (pred.groupby("file")["label"].apply(lambda s: (s != "none").mean())).to_dict()
    assert per_file["occupancy"].to_dict() == pytest.approx(occupancy)
    hours = pd.read_parquet(out["per_hour"])
    assert hours["windows"].sum() == len(pred)
    h1_hours = hours[hours["station"] == "H1"].sort_values("hour_utc")
    assert h1_hours["windows"].tolist() == [2, 3]  # 23:59:58-00:00 then 00:00-00:00:02.5
    assert hours.loc[hours["file"] == "plain.wav", "hour_in_file"].tolist() == [0]


def test_aquaflow_predict_gives_the_shard_tables(tmp_path, model):
    """`aquaflow predict` with a sound model: a folder of recordings gives the shard's per-window
    table, its rejected ledger (counts reconcile) and the gather's per-file table; one file too."""
    from aquaflow import cli

    _recordings(tmp_path / "rec")
    paths = sorted(str(p) for p in (tmp_path / "rec").iterdir())
    inputs = pd.DataFrame({"seq": np.arange(len(paths), dtype="int64"), "source": paths})
    card = json.loads((model / "model_card.json").read_text())
    shard = {
        k: tmp_path / f"{k}.{e}"
        for k, e in [("predictions", "parquet"), ("rejected", "parquet"), ("summary", "json")]
    }
    settings = {"batch": 4, "audio": {"hop_s": 0.5, "tail": "pad"}}
    engine.run_shard(inputs, model / "model.safetensors", card, shard, settings)
    args = ["predict", str(tmp_path / "rec"), "--model", str(model), "--hop-s", "0.5", "--batch-size", "4"]
    assert cli.main([*args, "-o", str(tmp_path / "cli"), "--device", "cpu"]) == 0
    summary = json.loads((tmp_path / "cli/summary.json").read_text())
    assert (summary["seen"], summary["predicted"], summary["rejected"]) == (6, 3, 3)
    ours = pd.read_parquet(tmp_path / "cli/predictions.parquet")
    pd.testing.assert_frame_equal(ours, pd.read_parquet(shard["predictions"]))
    rejected = pd.read_parquet(tmp_path / "cli/rejected.parquet")
    assert sorted(rejected["reason"]) == ["decode_error", "truncated", "zero_length"]
    per_file = pd.read_csv(tmp_path / "cli/per_file.tsv", sep="\t").set_index("file")
    assert per_file["windows"].to_dict() == ours.groupby("file").size().to_dict()
    assert per_file["windows"].sum() == summary["windows"] == len(ours)

    one = tmp_path / "rec/H2_20240602_000000.flac"
    assert (
        cli.main(["predict", str(one), "--model", str(model), "-o", str(tmp_path / "one"), "--device", "cpu"])
        == 0
    )
    single = pd.read_parquet(tmp_path / "one/predictions.parquet")
    assert single["file"].unique().tolist() == [one.name] and len(single) == 4  # 3.25 s, 1 s windows, pad


DRIFT = {**DRIFT_CFG, "batch": {"by": "chunk", "size": 1000, "min_size": 10}}


def test_drift_on_window_embeddings_flags_the_rainy_campaign_only(tmp_path, model):
    """The reference is the model on its training recordings' windows; a campaign from the same
    generator passes, one with heavy rain in every recording is flagged by the MMD on embeddings."""
    from aquaflow.monitoring import drift
    from aquaflow.synthetic import sound as synth

    kw = {"n_files": 12, "duration_s": 3.0, "rate": RATE, "window_s": 1.0}
    truth = synth.collection(tmp_path / "train", seed=11, **kw)
    card = json.loads((model / "model_card.json").read_text())
    cfg = {"reference": {"splits": ["train"], "sample_size": 1000}, "pca_components": 8, "seed": 0}
    ref = engine.build_reference(
        tmp_path / "train", truth, model / "model.safetensors", card, cfg, tmp_path / "w"
    )
    assert len(ref["embeddings"]) == len(truth) == 36 and "stats" not in ref
    meta = drift.save_reference(ref, tmp_path / "ref.npz", tmp_path / "ref.json")
    assert meta["images"] == 36 and meta["pca_components"] == 8
    verdicts = {}
    for name, rain, seed in (("same", None, 12), ("rainy", 80.0, 13)):
        synth.collection(tmp_path / name, seed=seed, rain_mmh=rain, **kw)
        out = engine.predict_recordings(
            inputs_of(tmp_path / name),
            model / "model.safetensors",
            card,
            tmp_path / f"{name}_out",
            {"embeddings": True},
            "none",
        )
        assert out["windows"] == 36
        files = {k: tmp_path / f"{name}_drift.{k}" for k in ("json", "table", "plot")}
        report = drift.run(
            predictions=tmp_path / f"{name}_out/predictions.parquet",
            reference=tmp_path / "ref.npz",
            out=files,
            cfg=DRIFT,
            title=name,
        )
        assert set(report["overall"]["tests"]) == {"mmd", "label_shift"} and "stats" in report["unavailable"]
        verdicts[name] = (report["overall"]["drift"], report["overall"]["tests"]["mmd"]["p_value"])
    assert verdicts["same"][0] is False and verdicts["rainy"][0] is True, verdicts
    assert verdicts["rainy"][1] < 0.05 / 2 < verdicts["same"][1]


def inputs_of(folder):
    paths = sorted(str(p) for p in folder.glob("*.wav"))
    return pd.DataFrame({"seq": np.arange(len(paths), dtype="int64"), "source": paths})


def test_a_darwin_core_archive_for_a_sound_campaign_is_refused_before_any_job(repo):
    """A samples table asks for a DwC-A, which is not built for windows of sound: the config check
    names the campaign's key and the switch, and passes once the export is off."""
    import yaml

    from aquaflow.config import ConfigError, check_usecase

    uc = yaml.safe_load((repo / "config/usecases/underwater_noise.yaml").read_text())
    check_usecase(uc, "underwater_noise.yaml")  # as shipped: no samples table
    uc["campaigns"]["demo"]["samples"] = {"path": "samples.csv"}
    with pytest.raises(ConfigError) as err:
        check_usecase(uc, "underwater_noise.yaml")
    assert "'campaigns.demo.samples.path'" in str(err.value) and "'export.dwca.enabled: false'" in str(
        err.value
    )
    uc["export"]["dwca"] = {"enabled": False}
    check_usecase(uc, "underwater_noise.yaml")
