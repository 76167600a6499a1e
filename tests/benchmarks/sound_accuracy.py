"""Sound model accuracy on SYNTHETIC recordings: prints `name: value` lines (run it by hand).

Generates --files labelled recordings (aquaflow.synthetic.sound: classes in turn, random vessels
and weather, two stations) at --rate, trains the underwater_noise use case's model on them through
the workflow (split by recording) with --arch for --epochs, and prints the test split's class
accuracy, macro-F1 and distance RMSE / MAE (bins, km) from the model card, and the time the
workflow took.

    .venv/bin/python tests/benchmarks/sound_accuracy.py [--files 160] [--arch resnet10t]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

from aquaflow.synthetic import sound  # noqa: E402
from tests.benchmarks.loader import print_machine  # noqa: E402
from tests.conftest import write_workdir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=160)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=16000)
    ap.add_argument("--window", type=float, default=2.0)
    ap.add_argument("--arch", default="resnet10t")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--work", type=Path, default=None, help="keep the run here (default: a temp folder)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp)
        data = work / "data"
        sound.collection(
            data / "train",
            n_files=a.files,
            duration_s=a.seconds,
            rate=a.rate,
            window_s=a.window,
            stations=("NB01", "NB02"),
        )
        uc = yaml.safe_load((REPO / "config/usecases/underwater_noise.yaml").read_text())
        uc["source"] = {"kind": "path", "path": str(data)}
        uc["sound"]["arch"] = a.arch
        uc["sound"]["audio"] = {"sample_rate": a.rate, "length_s": a.window, "hop_s": a.window, "tail": "pad"}
        uc["sound"]["mel"] = {"n_fft": 1024, "hop_length": 256, "n_mels": 64}
        uc["sound"]["training"] = {"epochs": a.epochs, "batch": 32, "lr": 0.001}
        uc.pop("campaigns", None)
        write_workdir(work, {"underwater_noise": uc})
        card_path = "results/underwater_noise/model/model_card.json"
        env = {**os.environ, "PYTHONPATH": str(REPO / "scripts")}
        cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "--directory"]
        t0 = time.perf_counter()
        subprocess.run([*cmd, str(work), card_path, "--cores", "all", "-q"], env=env, check=True)
        seconds = time.perf_counter() - t0
        card = json.loads((work / card_path).read_text())
    print_machine()
    print(f"data: {a.files} recordings of {a.seconds:g} s at {a.rate} Hz, {a.window:g} s windows (SYNTHETIC)")
    print(f"model: {a.arch}, {a.epochs} epochs; workflow seconds (data ready): {seconds:.0f}")
    for key, value in sorted(card["metrics"].items()):
        if isinstance(value, int | float):
            print(f"{key}: {value:.3f}")


if __name__ == "__main__":
    main()
