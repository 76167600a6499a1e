"""Peak memory of a sound shard on a 1-hour vs a 4-hour recording (the same shard engine and model).

Writes two recordings (48 kHz mono, 16-bit WAV of low-level noise, written block by block: ~350 MB
and ~1.4 GB on disk) into a temporary folder, then in a child process per recording runs a sound
shard (`aquaflow.engine.sound.run_shard`: streaming windows of 10 s, log-mel, a small random CNN,
the per-window table) and prints `name: value` lines: windows, wall time, windows/s and the child's
peak resident memory (VmHWM). Peak memory should not grow with the recording's length. Not a
pytest test (minutes, ~1.8 GB of disk); run it by hand:

    .venv/bin/python tests/benchmarks/sound_memory.py [--hours 1 4] [--rate 48000]
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

CHILD = """
import sys, time, json
sys.path.insert(0, {scripts!r}); sys.path.insert(0, {repo!r})
import pandas as pd
from aquaflow.engine import sound
from aquaflow.io import read_json
def status(key):
    return [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith(key)][0]
inputs = pd.DataFrame({{"seq": [0], "source": [{path!r}]}})
names = [("predictions", "parquet"), ("rejected", "parquet"), ("summary", "json")]
out = {{k: {work!r} + "/" + k + "." + e for k, e in names}}
card = read_json({model!r} + "/model_card.json")
t0 = time.perf_counter()
settings = {{"batch": 32, "audio": {{"block_s": 60.0}}}}
s = sound.run_shard(inputs, {model!r} + "/model.safetensors", card, out, settings)
peak = status("VmHWM:") / 1024
print(json.dumps({{"windows": s["windows"], "seconds": time.perf_counter() - t0, "peak_rss_mb": peak}}))
"""


def write_noise(path: Path, hours: float, rate: int) -> None:
    """A long recording written a minute at a time (never whole in memory)."""
    import numpy as np
    import soundfile as sf

    rng = np.random.default_rng(0)
    with sf.SoundFile(str(path), "w", samplerate=rate, channels=1, subtype="PCM_16") as f:
        for _ in range(round(hours * 60)):
            f.write(rng.normal(0, 0.01, rate * 60).astype(np.float32))


def main() -> None:
    from tests.sound_models import untrained_cnn

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hours", type=float, nargs="+", default=[1.0, 4.0])
    p.add_argument("--rate", type=int, default=48000)
    a = p.parse_args()
    print(f"cpu: {platform.processor() or platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = untrained_cnn(tmp / "model", rate=a.rate, length_s=10.0)
        for hours in a.hours:
            rec = tmp / f"H1_20240101_000000_{hours:g}h.wav"
            write_noise(rec, hours, a.rate)
            work = tmp / f"w{hours:g}"
            work.mkdir()
            code = CHILD.format(
                scripts=str(REPO / "scripts"), repo=str(REPO), path=str(rec), work=str(work), model=str(model)
            )
            t0 = time.perf_counter()
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"recording_hours: {hours:g}")
            print(f"recording_mb: {rec.stat().st_size / 2**20:.0f}")
            print(f"windows: {r['windows']}")
            print(f"shard_seconds: {r['seconds']:.1f} (child wall {time.perf_counter() - t0:.1f})")
            print(f"windows_per_second: {r['windows'] / r['seconds']:.1f}")
            print(f"peak_rss_mb: {r['peak_rss_mb']:.0f}")
            rec.unlink()


if __name__ == "__main__":
    main()
