"""Input kind `audio`: WAV/FLAC recordings -> fixed-length windows, streamed block by block.

A recording is never read whole: `windows` reads `block_s` seconds at a time with soundfile,
selects one channel (or the mean of all), resamples each block with `scipy.signal.resample_poly`
(blocks overlap by a margin longer than the filter and are trimmed, so the stream equals resampling
the whole file), and cuts windows of `length_s` every `hop_s` seconds of the resampled signal.

Windows start at 0, hop_s, 2*hop_s, ...; a window is *full* when it lies inside the recording.
What follows the last full window (the tail) is, by `tail`:
- `pad`: one more window starting at the next hop, zero-padded to length_s (its `padded_s` says
  how much), so every sample of the recording is in some window;
- `drop`: left out; each file reports the dropped seconds (`tail_dropped_s`).
A recording shorter than one window gives one padded window (`pad`) or is rejected as
`shorter_than_window` (`drop`), so no file disappears without a reason.

Each window carries its file, start/end in seconds from the file start (end = last real sample,
before padding), the station and the absolute UTC start when the file name gives the recording
start (`STATION_YYYYMMDD_HHMMSS.wav`, `name_pattern`).

Bad inputs raise `Rejected` (aquaflow.data.imaging) with one of REASONS: before any window when
the header shows it (zero_length, unreadable, unsupported_format, truncated, bad_channel,
shorter_than_window), or mid-stream (decode_error: e.g. a FLAC stream cut short; truncated: fewer
frames than the header declares) after some windows were yielded; callers discard those windows.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from aquaflow.data.imaging import Rejected

EXTENSIONS = [".wav", ".flac"]
FORMATS = {"WAV", "WAVEX", "RF64", "W64", "FLAC"}
SUBTYPES = {"PCM_S8", "PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"}
REASONS = (
    "zero_length",
    "unreadable",
    "unsupported_format",
    "truncated",
    "bad_channel",
    "shorter_than_window",
    "decode_error",
)
NAME_PATTERN = r"^(?P<station>[^_]+)_(?P<date>\d{8})_(?P<time>\d{6})"


@dataclass(frozen=True)
class WindowSpec:
    """How recordings become windows (the use case's `audio` section)."""

    sample_rate: int = 48000
    length_s: float = 10.0
    hop_s: float = 10.0
    channel: int | str = 0  # an index, or "mean" (all channels averaged)
    tail: str = "pad"  # pad | drop (see module doc)
    block_s: float = 60.0
    name_pattern: str = NAME_PATTERN

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> WindowSpec:
        return cls(**{k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg})

    @property
    def length(self) -> int:
        return round(self.length_s * self.sample_rate)

    @property
    def hop(self) -> int:
        return round(self.hop_s * self.sample_rate)


@dataclass
class Window:
    """One window of a recording: samples at spec.sample_rate (float32, length spec.length)."""

    index: int
    start_s: float
    end_s: float
    padded_s: float
    samples: np.ndarray


def recording_start(path: str | Path, pattern: str = NAME_PATTERN) -> tuple[str, datetime | None]:
    """(station, UTC start) from the file name; ("", None) where the name does not say."""
    m = re.match(pattern, Path(path).name)
    if not m:
        return "", None
    station = m.groupdict().get("station") or ""
    try:
        start = datetime.strptime(m["date"] + m["time"], "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except (IndexError, ValueError):
        start = None
    return station, start


def probe(path: str | Path, spec: WindowSpec) -> sf._SoundFileInfo:
    """The recording's header, or Rejected with the reason it cannot be windowed."""
    if os.path.getsize(path) == 0:
        raise Rejected("zero_length", "the file is empty (0 bytes)")
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError) as err:
        raise Rejected("unreadable", str(err)) from None
    if info.format not in FORMATS or info.subtype not in SUBTYPES:
        kind = f"{info.format}/{info.subtype}"
        raise Rejected("unsupported_format", f"{kind} (read: WAV or FLAC, PCM or float)")
    if "should be" in info.extra_info and info.format != "FLAC":
        line = next(x for x in info.extra_info.splitlines() if "should be" in x)
        raise Rejected("truncated", f"the header disagrees with the file size ({line.strip()})")
    if info.frames == 0:
        raise Rejected("zero_length", "the recording holds no samples")
    ch = spec.channel
    if ch != "mean" and not (isinstance(ch, int) and 0 <= ch < info.channels):
        raise Rejected("bad_channel", f"channel {ch!r} of a {info.channels}-channel recording")
    if spec.tail == "drop" and info.frames / info.samplerate * spec.sample_rate < spec.length:
        detail = f"{info.duration:.3f} s < {spec.length_s} s windows (tail: drop)"
        raise Rejected("shorter_than_window", detail)
    return info


class _Resampler:
    """Block-wise resample_poly equal to resampling the whole signal: each block is filtered with
    `margin` input samples of context on both sides (zeros beyond the ends, as resample_poly pads)."""

    def __init__(self, rate_in: int, rate_out: int):
        frac = Fraction(rate_out, rate_in)
        self.up, self.down = frac.numerator, frac.denominator
        half = 10 * max(self.up, self.down)  # resample_poly's default filter half-length
        self.margin = self.down * (math.ceil(half / self.up / self.down) + 1)

    def block(self, x: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Output for input samples [start, stop) of `x` (start a multiple of `down`)."""
        if self.up == self.down == 1:
            return x[start:stop]
        lo, hi = max(0, start - self.margin), min(len(x), stop + self.margin)
        left, right = np.zeros(self.margin - (start - lo)), np.zeros(self.margin - (hi - stop))
        y = resample_poly(np.concatenate([left, x[lo:hi], right]), self.up, self.down)
        skip = self.margin * self.up // self.down
        return y[skip : skip + math.ceil((stop - start) * self.up / self.down)]


def _mono(block: np.ndarray, channel: int | str) -> np.ndarray:
    return block.mean(axis=1) if channel == "mean" else block[:, channel]


def resampled_blocks(path: str | Path, spec: WindowSpec, info: Any) -> Iterator[np.ndarray]:
    """The recording at spec.sample_rate, one block of about block_s at a time (float64); memory
    holds one block plus the filter margin, never the whole file."""
    rs, frames = _Resampler(info.samplerate, spec.sample_rate), info.frames
    step = max(1, round(spec.block_s * info.samplerate) // rs.down) * rs.down
    total, emitted = math.ceil(frames * rs.up / rs.down), 0
    buf, base, done = np.zeros(0), 0, 0  # buf[0] is input sample `base`
    with sf.SoundFile(str(path)) as f:
        while done < frames:
            stop = min(frames, done + step)
            need = min(frames, stop + rs.margin) - (base + len(buf))
            if need > 0:
                try:
                    chunk = f.read(need, dtype="float64", always_2d=True)
                except (sf.LibsndfileError, RuntimeError) as err:
                    at = (base + len(buf)) / info.samplerate
                    raise Rejected("decode_error", f"at {at:.3f} s: {err}") from None
                if len(chunk) < need:
                    got = base + len(buf) + len(chunk)
                    raise Rejected("truncated", f"{got} of the {frames} frames its header declares")
                buf = np.concatenate([buf, _mono(chunk, spec.channel)])
            out = rs.block(buf, done - base, stop - base)
            if stop == frames:
                out = out[: total - emitted]
            emitted += len(out)
            yield out
            keep = max(base, stop - rs.margin)
            buf, base, done = buf[keep - base :], keep, stop


def windows(path: str | Path, spec: WindowSpec, info: Any | None = None) -> Iterator[Window]:
    """The windows of one recording, streamed (see the module doc for the tail and rejections)."""
    info = info if info is not None else probe(path, spec)
    n_win, hop, rate = spec.length, spec.hop, spec.sample_rate
    buf, offset, k, total = np.zeros(0, np.float32), 0, 0, 0  # buf[0] is sample `offset`
    for block in resampled_blocks(path, spec, info):
        buf = np.concatenate([buf, block.astype(np.float32)])
        total += len(block)
        while k * hop + n_win <= offset + len(buf):
            s = k * hop - offset
            yield Window(k, k * hop / rate, (k * hop + n_win) / rate, 0.0, buf[s : s + n_win].copy())
            k += 1
        drop = min(k * hop - offset, len(buf))  # samples no later window needs
        if drop > 0:
            buf, offset = buf[drop:], offset + drop
    start = k * hop
    if spec.tail == "pad" and start < total:
        tail = buf[start - offset :]
        pad = n_win - len(tail)
        yield Window(k, start / rate, total / rate, pad / rate, np.pad(tail, (0, pad)))


def covered(spec: WindowSpec, n_samples: int) -> tuple[int, int]:
    """(windows, samples after the end of the last window) of a recording of n_samples at
    spec.sample_rate: what `windows` yields, computed from the length alone."""
    full = 0 if n_samples < spec.length else (n_samples - spec.length) // spec.hop + 1
    if spec.tail == "pad" and full * spec.hop < n_samples:
        return full + 1, 0
    return full, n_samples - ((full - 1) * spec.hop + spec.length if full else 0)


def absolute_start(start: datetime | None, seconds: float) -> datetime | None:
    return None if start is None else start + timedelta(seconds=seconds)
