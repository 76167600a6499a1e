"""Audio input kind: windows cover the recording exactly as configured, streaming equals
whole-file resampling, bad recordings are rejected with their reason."""

from datetime import UTC, datetime

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from aquaflow.data import audio
from aquaflow.data.imaging import Rejected

RATE = 16000


def _ramp(path, n, rate=RATE, channels=1):
    """A recording whose every sample is distinct (so coverage can be checked value by value)."""
    x = (np.arange(n, dtype=np.float64) / n - 0.5)[:, None] * np.arange(1, channels + 1)
    sf.write(path, x if channels > 1 else x[:, 0], rate, subtype="FLOAT")
    return sf.read(path, dtype="float32")[0]


@pytest.mark.parametrize("tail", ["pad", "drop"])
def test_windows_cover_every_sample_as_configured(tmp_path, tail):
    n = RATE * 2 + 3001  # 2.19 s: not a multiple of the 0.25 s hop
    x = _ramp(tmp_path / "r.wav", n)
    spec = audio.WindowSpec(sample_rate=RATE, length_s=0.25, hop_s=0.25, tail=tail, block_s=0.3)
    wins = list(audio.windows(tmp_path / "r.wav", spec))
    n_full = n // spec.length
    assert len(wins) == audio.covered(spec, n)[0] == n_full + (tail == "pad")
    assert [w.index for w in wins] == list(range(len(wins)))
    assert all(len(w.samples) == spec.length for w in wins)
    joined = np.concatenate([w.samples for w in wins])
    if tail == "pad":  # every sample exactly once, then zeros to the end of the last window
        assert np.array_equal(joined[:n], x)
        assert not joined[n:].any() and len(joined) - n == round(wins[-1].padded_s * RATE)
        assert wins[-1].end_s == pytest.approx(n / RATE)
    else:  # every sample of the full windows exactly once; the tail left out and reported
        assert np.array_equal(joined, x[: n_full * spec.length])
        assert audio.covered(spec, n)[1] == n - n_full * spec.length == 3001 + RATE * 2 % spec.length


def test_overlapping_windows_start_every_hop(tmp_path):
    n = RATE + 777
    x = _ramp(tmp_path / "r.wav", n)
    spec = audio.WindowSpec(sample_rate=RATE, length_s=0.5, hop_s=0.2, tail="pad")
    wins = list(audio.windows(tmp_path / "r.wav", spec))
    hits = np.zeros(n, int)
    for w in wins:
        s = round(w.start_s * RATE)
        real = spec.length - round(w.padded_s * RATE)
        assert np.array_equal(w.samples[:real], x[s : s + real])
        hits[s : s + real] += 1
    assert hits.min() >= 1
    assert [round(w.start_s * RATE) for w in wins] == [k * spec.hop for k in range(len(wins))]


@pytest.mark.parametrize("rate_in", [44100, 16000, 96000])
def test_streaming_equals_whole_file_resampling(tmp_path, rate_in):
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "r.flac", rng.uniform(-0.5, 0.5, rate_in * 2 + 123), rate_in, subtype="PCM_24")
    whole_in = sf.read(tmp_path / "r.flac")[0]
    frac = audio.Fraction(48000, rate_in)
    whole = resample_poly(whole_in, frac.numerator, frac.denominator)
    spec = audio.WindowSpec(sample_rate=48000, length_s=0.5, hop_s=0.5, tail="pad", block_s=0.21)
    blocks = list(audio.resampled_blocks(tmp_path / "r.flac", spec, audio.probe(tmp_path / "r.flac", spec)))
    assert len(blocks) > 5  # really streamed
    assert np.allclose(np.concatenate(blocks), whole, atol=1e-9, rtol=0)
    wins = list(audio.windows(tmp_path / "r.flac", spec))
    assert np.allclose(wins[2].samples, whole[2 * spec.hop : 3 * spec.hop], atol=1e-6)


def test_channel_selection(tmp_path):
    x = _ramp(tmp_path / "s.wav", RATE, channels=2)
    for channel, expect in [(0, x[:, 0]), (1, x[:, 1]), ("mean", x.mean(axis=1))]:
        spec = audio.WindowSpec(sample_rate=RATE, length_s=1.0, hop_s=1.0, channel=channel)
        (w,) = audio.windows(tmp_path / "s.wav", spec)
        assert np.allclose(w.samples, expect, atol=1e-7)
    with pytest.raises(Rejected) as err:
        audio.probe(tmp_path / "s.wav", audio.WindowSpec(channel=2))
    assert err.value.reason == "bad_channel"


def _bad_files(tmp_path):
    sf.write(tmp_path / "ok.wav", np.zeros(RATE), RATE, subtype="PCM_16")
    data = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "truncated.wav").write_bytes(data[: len(data) // 2])
    (tmp_path / "header_only.wav").write_bytes(data[:44])
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "text.wav").write_bytes(b"not a recording at all\n" * 10)
    sf.write(tmp_path / "ogg.flac", np.zeros(RATE), RATE, format="OGG", subtype="VORBIS")
    sf.write(tmp_path / "cut.flac", np.random.default_rng(0).uniform(-1, 1, RATE), RATE)
    flac = (tmp_path / "cut.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(flac[: len(flac) // 2])
    return {
        "truncated.wav": "truncated",
        "header_only.wav": "truncated",
        "zero.wav": "zero_length",
        "text.wav": "unreadable",
        "ogg.flac": "unsupported_format",
        "cut.flac": "decode_error",
    }


def test_bad_recordings_rejected_with_reasons(tmp_path):
    spec = audio.WindowSpec(sample_rate=RATE, length_s=0.1, hop_s=0.1)
    for name, reason in _bad_files(tmp_path).items():
        with pytest.raises(Rejected) as err:
            list(audio.windows(tmp_path / name, spec))
        assert err.value.reason == reason, (name, err.value)
        assert err.value.reason in audio.REASONS
    short = audio.WindowSpec(sample_rate=RATE, length_s=2.0, hop_s=2.0, tail="drop")
    with pytest.raises(Rejected, match="shorter_than_window"):
        audio.probe(tmp_path / "ok.wav", short)
    padded = audio.WindowSpec(sample_rate=RATE, length_s=2.0)
    assert len(list(audio.windows(tmp_path / "ok.wav", padded))) == 1


def test_station_and_utc_start_from_the_file_name():
    station, start = audio.recording_start("/d/BPNS01_20240317_231500.flac")
    assert station == "BPNS01" and start == datetime(2024, 3, 17, 23, 15, tzinfo=UTC)
    assert audio.absolute_start(start, 3600.5) == datetime(2024, 3, 18, 0, 15, 0, 500000, tzinfo=UTC)
    assert audio.recording_start("/d/recording.wav") == ("", None)
