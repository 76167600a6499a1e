"""Drift step benchmark: prints `name: value` lines (not a timed test; run it by hand).

Writes N synthetic FlowCam-like crops (aquaflow.synthetic.plankton) plus a reference set, runs the
shard engine on them with embeddings (the inference cost), builds the drift reference, then times
the drift step (aquaflow.monitoring.drift.run: every batch of `--batch-size` images and the whole campaign
tested with the default detectors) and reports both per 10,000 images. The model has random
weights of the configured architecture: cost does not depend on what it learnt.

    .venv/bin/python tests/benchmarks/drift.py --n 10000 [--arch mobilenetv4_conv_small --size 128]
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

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from aquaflow.backends import torch_model as models  # noqa: E402
from aquaflow.config import validate  # noqa: E402
from aquaflow.data.inputs import from_folder  # noqa: E402
from aquaflow.engine import infer, reference  # noqa: E402
from aquaflow.io import sha256_file, write_json  # noqa: E402
from aquaflow.monitoring import drift  # noqa: E402
from aquaflow.synthetic import plankton  # noqa: E402


class _Keep:
    def __init__(self, path: str):
        self.path = path

    def __enter__(self) -> str:
        Path(self.path).mkdir(parents=True, exist_ok=True)
        return self.path

    def __exit__(self, *exc) -> None:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--reference", type=int, default=1000)
    ap.add_argument("--arch", default="mobilenetv4_conv_small")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=1000, help="drift.batch.size")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep", default=None, help="work in this folder (outputs kept)")
    args = ap.parse_args()

    cfg = validate(
        {"model": {"source": "path", "path": "."}, "drift": {"batch": {"size": args.batch_size}}},
        REPO / "workflow/schemas/usecase.schema.yaml",
        "b",
    )
    cfg = {k: v for k, v in cfg["drift"].items() if k not in ("enabled", "on_drift")}
    with tempfile.TemporaryDirectory() if args.keep is None else _Keep(args.keep) as tmp:
        work = Path(tmp)
        net = models.build(args.arch, len(plankton.CLASSES))
        models.save_weights(net, work / "model.safetensors")
        card = {
            "id": sha256_file(work / "model.safetensors"),
            "format": "safetensors",
            "arch": args.arch,
            "classes": list(plankton.CLASSES),
            "input_size": args.size,
            "normalization": {"mean": list(models.IMAGENET_MEAN), "std": list(models.IMAGENET_STD)},
        }
        write_json(card, work / "model_card.json")
        t0 = time.perf_counter()
        ref_imgs = plankton.write_images(work / "train", args.reference, seed=0)
        per_folder = 2000
        for i in range(0, args.n, per_folder):
            plankton.write_images(
                work / "campaign" / f"part{i // per_folder:03d}", min(per_folder, args.n - i), 1 + i
            )
        print(f"images_written: {args.n + args.reference} in {time.perf_counter() - t0:.1f} s")

        inputs = from_folder(work / "campaign", [".png"])
        inputs.insert(0, "seq", np.arange(len(inputs)))
        batch, workers = infer.loader_settings(
            {"device": "cpu", "batch_size": None, "workers": None}, args.threads
        )
        t0 = time.perf_counter()
        summary = infer.run_shard(
            inputs,
            work / "model.safetensors",
            work / "model_card.json",
            work / "pred.parquet",
            work / "rej.parquet",
            work / "summary.json",
            embeddings=True,
            threads=args.threads,
            device="cpu",
            batch_size=batch,
            workers=workers,
        )
        t_infer = time.perf_counter() - t0

        manifest = pd.DataFrame(
            {
                "id": [p.stem for p, _ in ref_imgs],
                "path": [p.name for p, _ in ref_imgs],
                "label": [c for _, c in ref_imgs],
                "split": "train",
            }
        )
        t0 = time.perf_counter()
        ref = reference.build_reference(
            manifest,
            work / "train",
            work / "model.safetensors",
            work / "model_card.json",
            cfg,
            threads=args.threads,
            device="cpu",
        )
        drift.save_reference(ref, work / "ref.npz", work / "ref.json")
        t_ref = time.perf_counter() - t0

        # the drift step as Snakemake runs it: a fresh process (imports included)
        step = (
            "import json, sys, time; t0 = time.perf_counter(); sys.path.insert(0, sys.argv[1]);"
            "from aquaflow import drift; t1 = time.perf_counter();"
            "cfg = json.loads(sys.argv[3]); w = sys.argv[2];"
            "out = {'json': w + '/d.json', 'table': w + '/d.tsv', 'plot': w + '/d.png'};"
            "rep = drift.run(predictions=w + '/pred.parquet', reference=w + '/ref.npz',"
            " out=out, cfg=cfg, title='b');"
            "print(json.dumps({'import': t1 - t0, 'run': time.perf_counter() - t1,"
            " 'batches': len(rep['batches']), 'drifted': rep['overall']['drifted_batches']}))"
        )
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-c", step, str(REPO / "scripts"), str(work), json.dumps(cfg)],
            capture_output=True,
            text=True,
            check=True,
        )
        t_drift = time.perf_counter() - t0
        res = json.loads(proc.stdout.strip().splitlines()[-1])

    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model_name = next(
        (ln.split(":", 1)[1].strip() for ln in cpu.splitlines() if ln.startswith("Model name")), ""
    )
    per10k = 10000 / args.n
    print(f"machine: {model_name or platform.processor()}, {args.threads} threads")
    print(f"model: {args.arch} @ {args.size}px, random weights; images predicted: {summary['predicted']}")
    print(f"inference_seconds_per_10k: {t_infer * per10k:.1f}")
    print(f"drift_reference_seconds ({args.reference} images, once per model): {t_ref:.1f}")
    print(
        f"drift_step_seconds: {t_drift:.2f} (process start + imports {res['import']:.2f}, tests + outputs "
        f"{res['run']:.2f}; {res['batches']} batches of {args.batch_size} + overall, "
        f"{cfg['permutations']} permutations, {cfg['sample_size']} images per test)"
    )
    print(f"drift_seconds_per_10k: {t_drift * per10k:.2f}")
    print(f"drift_fraction_of_inference: {t_drift / t_infer:.1%}")
    print(f"drifted_batches (i.i.d. synthetic data, expect about alpha x batches): {res['drifted']}")


if __name__ == "__main__":
    main()
