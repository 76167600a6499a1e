"""Log-mel spectrograms of windows in numpy, in absolute dB (levels carry the distance).

The same numbers as `librosa.feature.melspectrogram` (centred zero-padded STFT, periodic Hann
window, Slaney mel filters with Slaney area normalisation) followed by
`librosa.power_to_db(ref=1.0, top_db=None)` - checked against librosa in the unit tests - without
librosa's first-call cost (seconds of lazy loading in every shard process).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import scipy.fft
from scipy.signal import get_window

MEL_DEFAULTS = {"n_fft": 1024, "hop_length": 512, "n_mels": 64, "fmin": 10.0, "fmax": None}
AMIN = 1e-12  # power floor before the log (dB re full scale)


def hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000.0, f * 3 / 200, 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27))


def mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, m * 200 / 3, 1000.0 * np.exp((np.log(6.4) / 27) * (m - 15.0)))


@functools.lru_cache(maxsize=8)
def mel_filters(rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float | None) -> np.ndarray:
    """(n_mels, n_fft//2+1) triangular filters, each normalised to unit area (Slaney)."""
    fmax = rate / 2 if fmax is None else fmax
    freqs = np.fft.rfftfreq(n_fft, 1 / rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    ramps = edges[:, None] - freqs[None, :]
    width = np.diff(edges)
    lower = -ramps[:-2] / width[:-1, None]
    upper = ramps[2:] / width[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return (weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]).astype(np.float32)


def log_mel(windows: np.ndarray, rate: int, settings: dict[str, Any]) -> np.ndarray:
    """(n, samples) windows -> (n, n_mels, frames) float32 log-mel power, dB re full scale;
    in float32, one window at a time (memory: a few times one window's spectrogram)."""
    s = {**MEL_DEFAULTS, **settings}
    n_fft, hop = int(s["n_fft"]), int(s["hop_length"])
    window = get_window("hann", n_fft, fftbins=True).astype(np.float32)
    fb = mel_filters(rate, n_fft, int(s["n_mels"]), float(s["fmin"]), s["fmax"])
    x = np.asarray(windows, dtype=np.float32)
    out = np.empty((len(x), fb.shape[0], 1 + x.shape[1] // hop), np.float32)
    for i, w in enumerate(x):
        frames = np.lib.stride_tricks.sliding_window_view(np.pad(w, n_fft // 2), n_fft)[::hop]
        spec = scipy.fft.rfft(frames * window, axis=1)  # complex64 for float32 input
        power = spec.real**2 + spec.imag**2  # (frames, bins)
        out[i] = 10.0 * np.log10(np.maximum(fb @ power.T, AMIN))
    return out
