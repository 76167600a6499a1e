"""Synthetic hydrophone recordings with known truth (SYNTHETIC: no real vessel was recorded).

A recording is ambient sea noise plus, optionally, one vessel passing the hydrophone on a straight
line (closest point of approach `cpa_km` at `t_cpa_s`). Built window by window in the frequency
domain and appended to the file, so hours-long files never sit in memory:
- vessel source: tonals at the blade rate (shaft rate x blades) and its harmonics, tonals at the
  engine firing rate and harmonics, and cavitation broadband (peaking at 150, 800 or 3000 Hz by class),
  amplitude-modulated at the blade rate;
- Lloyd's mirror: the surface-reflected path interferes with the direct one,
  H(f) = 1 - exp(-2i pi f tau) with tau = 2 d_s d_r / (c R) (source and receiver depths d_s, d_r);
- propagation: spherical spreading 20 log10(R) plus Thorp absorption alpha(f) R (dB/km);
- ambient: wind noise (Wenz-like, level from the wind speed, -17 dB/decade above 500 Hz) and rain
  (broadband, flat to ~20 kHz, level from the rain rate).
Levels are dB re 1 uPa; sample value 1.0 is 150 dB re 1 uPa (a hydrophone's full scale).

Truth per window: vessel class (`none` when no vessel is present), the distance to the vessel
in km at the window centre and its ordinal bin (0: 0-1 km ... 9: 9-10 km, 10: 10+ km).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

CLASSES = ("none", "cargo", "passenger", "fishing")
N_BINS = 11  # 0-1 km, 1-2 km, ..., 9-10 km, 10+ km
FULL_SCALE_DB = 150.0
SOUND_SPEED = 1500.0
# class: (shaft Hz, blades, engine firing Hz, source level dB re 1 uPa @ 1 m, cavitation peak Hz)
VESSELS = {
    "cargo": ((1.2, 1.8), (4, 5), (8.0, 14.0), (182.0, 188.0), 150.0),
    "passenger": ((2.5, 3.5), (5, 6), (25.0, 40.0), (176.0, 182.0), 800.0),
    "fishing": ((4.0, 6.0), (3, 4), (45.0, 70.0), (170.0, 176.0), 3000.0),
}


def distance_bin(km: np.ndarray | float) -> np.ndarray:
    """The ordinal bin of a distance: floor(km), 10 for 10 km and beyond."""
    return np.clip(np.floor(np.asarray(km, dtype=float)), 0, N_BINS - 1).astype(int)


def bin_centre_km(bins: np.ndarray | float) -> np.ndarray:
    """The distance a bin stands for (its centre; 11 km for 10+ km), for RMSE / MAE in km."""
    return np.asarray(bins, dtype=float) + 0.5


def thorp_db_per_km(f_hz: np.ndarray) -> np.ndarray:
    """Thorp's sea-water absorption (dB/km) at frequency f."""
    f2 = (np.asarray(f_hz) / 1000.0) ** 2
    return 0.11 * f2 / (1 + f2) + 44 * f2 / (4100 + f2) + 2.75e-4 * f2 + 0.003


@dataclass(frozen=True)
class Vessel:
    kind: str
    cpa_km: float
    speed_ms: float
    t_cpa_s: float
    shaft_hz: float
    blades: int
    engine_hz: float
    source_db: float
    depth_m: float = 5.0

    @classmethod
    def random(
        cls, kind: str, rng: np.random.Generator, duration_s: float, max_cpa_km: float = 11.0
    ) -> Vessel:
        shaft, blades, engine, level, _ = VESSELS[kind]
        return cls(
            kind,
            cpa_km=float(rng.uniform(0.1, max_cpa_km)),
            speed_ms=float(rng.uniform(3.0, 9.0)),
            t_cpa_s=float(rng.uniform(0, duration_s)),
            shaft_hz=float(rng.uniform(*shaft)),
            blades=int(rng.integers(blades[0], blades[1] + 1)),
            engine_hz=float(rng.uniform(*engine)),
            source_db=float(rng.uniform(*level)),
        )

    def range_km(self, t_s: np.ndarray | float) -> np.ndarray:
        along = self.speed_ms * (np.asarray(t_s) - self.t_cpa_s) / 1000.0
        return np.hypot(self.cpa_km, along)


def _shaped_noise(rng: np.random.Generator, n: int, rate: int, level_db: np.ndarray) -> np.ndarray:
    """White noise given a spectrum level (dB re 1 uPa^2/Hz, one per rfft bin) -> spectrum."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    amp = 10 ** ((level_db - FULL_SCALE_DB) / 20) * math.sqrt(rate / 2) / math.sqrt(2)
    return spec * amp * math.sqrt(n)


def ambient_spectrum(f: np.ndarray, wind_ms: float, rain_mmh: float) -> np.ndarray:
    """Ambient spectrum level (dB re 1 uPa^2/Hz): wind (Wenz-like) and rain, powers added."""
    fk = np.maximum(f, 10.0)
    wind = 50 + 7.5 * math.sqrt(max(wind_ms, 0.0)) + 20 * np.log10(np.minimum(fk, 500) / 500)
    wind = wind - 17 * np.log10(np.maximum(fk / 500, 1.0))
    rain = (
        np.where(fk > 1000, 45 + 10 * math.log10(1 + rain_mmh) - 5 * np.log10(fk / 1000 + 1), 0)
        if rain_mmh
        else -np.inf
    )
    return 10 * np.log10(10 ** (wind / 10) + 10 ** (np.asarray(rain, dtype=float) / 10))


def _vessel_window(v: Vessel, t0: float, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    """The vessel's contribution to one window (received at the hydrophone), as samples."""
    t = t0 + np.arange(n) / rate
    f = np.fft.rfftfreq(n, 1 / rate)
    sig = np.zeros(n)
    blade = v.shaft_hz * v.blades
    amp_src = 10 ** ((v.source_db - FULL_SCALE_DB) / 20)
    for k, (base, weight) in enumerate([(blade, 1.0)] * 6 + [(v.engine_hz, 0.5)] * 4):
        harmonic = base * (k % 6 + 1 if k < 6 else k - 5)
        if harmonic < rate / 2:
            sig += weight * amp_src * 0.3 / (k % 6 + 1) * np.sin(2 * np.pi * harmonic * t + 0.7 * k)
    peak = VESSELS[v.kind][4]
    cav_db = v.source_db - 25 - 10 * np.log10(1 + ((f + 1) / peak - peak / (f + 1)) ** 2)
    cav = np.fft.irfft(_shaped_noise(rng, n, rate, cav_db), n)
    sig += cav * (1 + 0.5 * np.sin(2 * np.pi * blade * t))  # cavitation modulated at blade rate
    r_km = float(v.range_km(t0 + n / rate / 2))
    r_m = max(r_km * 1000, 1.0)
    tau = 2 * v.depth_m * 20.0 / (SOUND_SPEED * r_m)  # hydrophone at 20 m depth
    h = (1 - np.exp(-2j * np.pi * f * tau)) * 10 ** (-(20 * np.log10(r_m) + thorp_db_per_km(f) * r_km) / 20)
    return np.fft.irfft(np.fft.rfft(sig) * h, n)


def write_recording(
    path: str | Path,
    *,
    duration_s: float,
    rate: int = 48000,
    vessel: Vessel | None,
    wind_ms: float = 5.0,
    rain_mmh: float = 0.0,
    window_s: float = 10.0,
    seed: int = 0,
    subtype: str = "FLOAT",
) -> pd.DataFrame:
    """Write one recording window by window; returns its truth, one row per window."""
    rng = np.random.default_rng(seed)
    n = round(window_s * rate)
    f = np.fft.rfftfreq(n, 1 / rate)
    amb_db = ambient_spectrum(f, wind_ms, rain_mmh)
    rows, total = [], round(duration_s * rate)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype=subtype) as out:
        for k, start in enumerate(range(0, total, n)):
            m = min(n, total - start)
            x = np.fft.irfft(_shaped_noise(rng, n, rate, amb_db), n)
            if vessel is not None:
                x += _vessel_window(vessel, start / rate, n, rate, rng)
            out.write(np.clip(x[:m], -1, 1).astype(np.float32))
            km = float(vessel.range_km((start + m / 2) / rate)) if vessel else float("nan")
            rows.append((k, start / rate, (start + m) / rate, vessel.kind if vessel else "none", km))
    df = pd.DataFrame(rows, columns=["window", "start_s", "end_s", "label", "distance_km"])
    df["distance_bin"] = np.where(df["label"] == "none", -1, distance_bin(df["distance_km"].fillna(0)))
    return df


def collection(
    folder: str | Path,
    *,
    n_files: int,
    duration_s: float,
    rate: int = 48000,
    window_s: float = 10.0,
    stations: tuple[str, ...] = ("STN1",),
    start: datetime = datetime(2024, 6, 1),
    seed: int = 0,
    ext: str = "wav",
    rain_mmh: float | None = None,
) -> pd.DataFrame:
    """`n_files` recordings named STATION_YYYYMMDD_HHMMSS.<ext> (classes in turn, random vessels
    and weather; `rain_mmh` set: that rain in every recording, e.g. a shifted campaign) and
    `truth.csv` beside them (file, window, start_s, end_s, label, distance)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tables = []
    for i in range(n_files):
        kind = CLASSES[i % len(CLASSES)]
        vessel = None if kind == "none" else Vessel.random(kind, rng, duration_s)
        when = start + timedelta(seconds=i * duration_s)
        name = f"{stations[i % len(stations)]}_{when:%Y%m%d_%H%M%S}.{ext}"
        truth = write_recording(
            folder / name,
            duration_s=duration_s,
            rate=rate,
            vessel=vessel,
            wind_ms=float(rng.uniform(2, 8)),
            rain_mmh=float(rng.choice([0.0, 0.0, 5.0])) if rain_mmh is None else rain_mmh,
            window_s=window_s,
            seed=seed * 100003 + i,
            subtype="FLOAT" if ext == "wav" else "PCM_24",
        )
        tables.append(truth.assign(file=name))
    out = pd.concat(tables, ignore_index=True)
    out = out[["file", *[c for c in out.columns if c != "file"]]]
    out.to_csv(folder / "truth.csv", index=False)
    return out


def main(argv: list[str] | None = None) -> None:
    """python -m aquaflow.synthetic.sound OUT: OUT/train (labelled, truth.csv) and OUT/campaign."""
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--train-files", type=int, default=48)
    p.add_argument("--campaign-files", type=int, default=8)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--rate", type=int, default=48000)
    p.add_argument("--window", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    common = {"duration_s": a.seconds, "rate": a.rate, "window_s": a.window}
    collection(a.out / "train", n_files=a.train_files, stations=("NB01", "NB02"), seed=a.seed, **common)
    collection(
        a.out / "campaign",
        n_files=a.campaign_files,
        stations=("NB03",),
        start=datetime(2024, 7, 1, 23, 58),
        seed=a.seed + 1,
        ext="flac",
        **common,
    )


if __name__ == "__main__":
    main()
