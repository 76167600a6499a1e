"""The synthetic hydrophone generator: truth per window, physics that a model can learn from."""

import numpy as np
import soundfile as sf

from aquaflow.synthetic import sound

RATE = 16000


def _vessel(cpa_km):
    return sound.Vessel("cargo", cpa_km, 5.0, 0.0, 1.5, 4, 10.0, 185.0)


def _level_db(x):
    return 20 * np.log10(np.sqrt(np.mean(x**2))) + sound.FULL_SCALE_DB


def test_collection_truth_and_names(tmp_path):
    truth = sound.collection(
        tmp_path, n_files=4, duration_s=5.0, rate=RATE, window_s=2.0, stations=("A", "B")
    )
    assert sorted(p.name for p in tmp_path.glob("*.wav")) == sorted(truth["file"].unique())
    assert len(truth) == 4 * 3  # 2 + 2 + 1 s windows per 5 s file
    per_file = truth.groupby("file")["label"].first()
    assert sorted(per_file) == sorted(sound.CLASSES)
    none = truth[truth["label"] == "none"]
    assert (none["distance_bin"] == -1).all() and none["distance_km"].isna().all()
    vessel = truth[truth["label"] != "none"]
    assert vessel["distance_bin"].between(0, 10).all()
    assert (vessel["distance_bin"] == np.minimum(np.floor(vessel["distance_km"]), 10)).all()
    assert {f.split("_")[0] for f in truth["file"]} == {"A", "B"}
    assert sf.info(str(tmp_path / truth["file"][0])).samplerate == RATE


def test_spreading_absorption_and_tonals(tmp_path):
    near = sound.write_recording(tmp_path / "n.wav", duration_s=2, rate=RATE, vessel=_vessel(0.5), wind_ms=1)
    sound.write_recording(tmp_path / "f.wav", duration_s=2, rate=RATE, vessel=_vessel(5.0), wind_ms=1)
    sound.write_recording(tmp_path / "a.wav", duration_s=2, rate=RATE, vessel=None, wind_ms=1)
    xn, xf, xa = (sf.read(tmp_path / f"{k}.wav")[0] for k in "nfa")
    assert near["label"].eq("cargo").all() and near["distance_bin"].eq(0).all()
    # 10x the distance: 20 dB of spherical spreading, plus up to 20 dB where Lloyd's mirror holds
    # (low frequencies, where the surface reflection cancels the direct path as 1/R)
    assert 20 < _level_db(xn) - _level_db(xf) < 42
    assert _level_db(xf) > _level_db(xa)
    f = np.fft.rfftfreq(len(xn), 1 / RATE)
    pn = np.abs(np.fft.rfft(xn)) ** 2
    # a tonal at the blade rate (1.5 Hz x 4 blades = 6 Hz harmonics): 2nd harmonic 12 Hz stands out
    band = (f > 8) & (f < 16)
    assert f[band][np.argmax(pn[band])] == np.float64(12.0)
    assert sound.thorp_db_per_km(np.array([1000.0]))[0] < sound.thorp_db_per_km(np.array([20000.0]))[0]
