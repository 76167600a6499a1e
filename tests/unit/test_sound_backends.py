"""Sound backends: numpy log-mel equals librosa; the CNN and the CLAP head train, write a valid
card and predict; CLAP loads from a local folder only and its embeddings are cached per window;
distance metrics in bins and km."""

import numpy as np
import pytest

from aquaflow.backends.sound import train
from aquaflow.backends.sound.clap import ClapTower, tower_id
from aquaflow.backends.sound.features import log_mel
from aquaflow.backends.sound.model import CLAP_FOLDER, SoundModel, import_given
from aquaflow.data import audio
from aquaflow.models.artifacts import ModelCardError, read_card
from aquaflow.synthetic import sound
from aquaflow.tasks.sound.metrics import bin_km, coral_outputs, figures
from tests.sound_models import tiny_clap

RATE = 16000


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sound") / "data"
    sound.collection(folder, n_files=12, duration_s=3.0, rate=RATE, window_s=1.0, seed=2)
    return folder


def _settings(backend, **extra):
    return {
        "backend": backend,
        "arch": "test_convnext",
        "audio": {"sample_rate": RATE, "length_s": 1.0, "hop_s": 1.0},
        "mel": {"n_fft": 512, "hop_length": 256, "n_mels": 32},
        "truth": "truth.csv",
        "classes": list(sound.CLASSES),
        "distance_edges_km": list(range(11)),
        "training": {
            "epochs": 2,
            "batch": 8,
            "lr": 1e-3,
            "seed": 0,
            "val_fraction": 0.2,
            "test_fraction": 0.2,
        },
        **extra,
    }


def _out(folder):
    folder.mkdir(parents=True, exist_ok=True)
    names = {
        "weights": "model.safetensors",
        "card": "model_card.json",
        "history": "history.tsv",
        "metrics": "m.json",
    }
    return {k: folder / v for k, v in names.items()}


def test_log_mel_equals_librosa():
    import librosa

    x = np.random.default_rng(0).normal(0, 0.05, (3, 8000)).astype(np.float32)
    settings = {"n_fft": 512, "hop_length": 160, "n_mels": 40, "fmin": 30.0, "fmax": 7000.0}
    ours = log_mel(x, RATE, settings)
    mel = librosa.feature.melspectrogram(y=x, sr=RATE, power=2.0, **settings)
    ref = librosa.power_to_db(mel, ref=1.0, amin=1e-12, top_db=None)
    assert ours.shape == ref.shape == (3, 40, 51)
    assert np.abs(ours - ref).max() < 1e-3


def test_cnn_trains_and_predicts(tmp_path, data):
    out = _out(tmp_path / "cnn")
    card = train.train(_settings("sound_cnn"), data, out, tmp_path / "work")
    assert read_card(out["card"])["id"] == card["id"]  # valid against the model-card schema
    assert card["task"] == "sound" and card["training"]["windows"] == {"train": 12, "val": 12, "test": 12}
    files = card["training"]["files"]
    assert not set(files["train"]) & set(files["test"]) and len(files["test"]) == 4  # split by file
    for key in ("accuracy", "macro_f1", "rmse_bins", "mae_bins", "rmse_km", "mae_km"):
        assert np.isfinite(card["metrics"][f"test_{key}"])
    model = SoundModel(out["weights"], card)
    spec = audio.WindowSpec.from_config(card["audio"])
    wins = np.stack([w.samples for w in audio.windows(data / files["test"][0], spec)])
    found = model.predict(wins)
    assert found["probs"].shape == (3, 4) and np.allclose(found["probs"].sum(1), 1, atol=1e-5)
    assert (
        found["above"].shape == (3, 10) and (np.diff(found["above"], axis=1) <= 1e-6).all()
    )  # CORAL: rank-consistent
    assert model.predict(wins[:0])["probs"].shape == (0, 4)


def test_clap_head_from_a_local_folder_with_cached_embeddings(tmp_path, data):
    tower_dir = tiny_clap(tmp_path / "clap")
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        ClapTower(tmp_path / "nowhere")
    settings = _settings("clap", clap={"path": str(tower_dir)}, hidden=16)
    card = train.train(settings, data, _out(tmp_path / "m1"), tmp_path / "work")
    cached = sorted((tmp_path / "work/embeddings").glob("*.npy"))
    assert len(cached) == 12 and np.load(cached[0]).shape == (3, 16)  # one per recording: (windows, dim)
    stamps = [p.stat().st_mtime_ns for p in cached]
    again = train.train(settings, data, _out(tmp_path / "m2"), tmp_path / "work")
    assert [p.stat().st_mtime_ns for p in cached] == stamps and again["id"] == card["id"]  # cache reused
    assert card["backend"] == "clap" and card["audio"]["embedding_dim"] == 16
    assert (tmp_path / "m1" / CLAP_FOLDER / "config.json").is_file()
    model = SoundModel(tmp_path / "m1/model.safetensors", card)
    spec = audio.WindowSpec.from_config(card["audio"])
    first = card["training"]["files"]["test"][0]
    wins = np.stack([w.samples for w in audio.windows(data / first, spec)])
    found = model.predict(wins)
    assert found["embedding"].shape == (3, 16)
    assert np.allclose(found["embedding"], ClapTower(tower_dir).embed(wins), atol=1e-5)
    # given back (model.source: path): the tower comes along, checked against the card's clap_id
    given = {"source": "path", "path": str(tmp_path / "m1")}
    with pytest.raises(
        ModelCardError, match=r"backend 'clap'; this use case needs task 'sound', backend 'sound_cnn'"
    ):
        import_given(given, "sound_cnn", tmp_path / "g0/model.safetensors", tmp_path / "g0/model_card.json")
    imported = import_given(given, "clap", tmp_path / "g1/model.safetensors", tmp_path / "g1/model_card.json")
    assert imported["id"] == card["id"] and imported["imported_from"] == given
    assert tower_id(tmp_path / "g1" / CLAP_FOLDER) == card["audio"]["clap_id"] == tower_id(tower_dir)
    (tmp_path / "m1" / CLAP_FOLDER / "model.safetensors").write_bytes(b"not the tower")
    with pytest.raises(ModelCardError, match=r"differs from the card's audio\.clap_id"):
        import_given(given, "clap", tmp_path / "g2/model.safetensors", tmp_path / "g2/model_card.json")


def test_ordinal_outputs_and_distance_errors():
    above, pred, expected = coral_outputs(np.array([[9.0, 9.0, -9.0], [-9.0, -9.0, -9.0]]))
    assert above.shape == (2, 3) and pred.tolist() == [2, 0]
    assert expected == pytest.approx([2.0, 0.0], abs=1e-3)
    edges = [0, 1, 2, 5]  # bins 0-1, 1-2, 2-5, 5+ km
    assert bin_km(np.array([0, 1, 2, 3]), edges).tolist() == [0.5, 1.5, 3.5, 6.5]
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    f = figures(np.array([0, 1, 1]), probs, np.array([2, 0, -1]), np.array([1.0, 0.0, 3.0]), edges)
    assert f["accuracy"] == pytest.approx(2 / 3) and f["distance_windows"] == 2
    assert f["rmse_bins"] == pytest.approx(np.sqrt(0.5)) and f["mae_bins"] == pytest.approx(0.5)
    assert f["rmse_km"] == pytest.approx(np.sqrt(2.0**2 / 2)) and f["mae_km"] == pytest.approx(1.0)


def test_sound_figures_get_bootstrap_intervals_over_windows():
    """Every figure of the sound test split gets an interval: accuracy's is scipy's own percentile
    bootstrap of the right answers (same draws), distance errors' bracket the spread of draws."""
    from scipy import stats

    from aquaflow.tasks.sound.metrics import figure_intervals

    rng = np.random.default_rng(0)
    n, edges = 40, [float(k) for k in range(11)]
    y = rng.integers(0, 3, n)
    probs = rng.dirichlet(np.ones(3), n)
    probs[np.arange(25), y[:25]] += 2  # 25 windows surely right, the rest by chance
    y_bin = np.where(y == 0, -1, rng.integers(0, 11, n))
    expected = np.clip(y_bin + rng.normal(0, 1, n), 0, 10)
    block = figure_intervals(y, probs, y_bin, expected, edges, {"resamples": 300, "seed": 3})
    assert {k: block[k] for k in ("method", "resamples", "level", "seed")} == {
        "method": "percentile bootstrap over windows",
        "resamples": 300,
        "level": 0.95,
        "seed": 3,
    }
    direct = stats.bootstrap(
        ((probs.argmax(1) == y).astype(float),),
        np.mean,
        n_resamples=300,
        method="percentile",
        random_state=np.random.default_rng(3),
    ).confidence_interval
    assert block["accuracy"] == pytest.approx([direct.low, direct.high])
    full = figures(y, probs, y_bin, expected, edges)
    assert set(block) - {"method", "resamples", "level", "seed"} == set(full) - {
        "windows",
        "distance_windows",
    }
    for name in ("macro_f1", "rmse_bins", "mae_bins", "rmse_km", "mae_km"):
        low, high = block[name]
        assert 0 <= low < high and low <= full[name] * 1.5 and high >= full[name] / 1.5, name
