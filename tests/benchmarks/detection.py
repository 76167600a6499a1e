"""Detection benchmark: prints `name: value` lines (not a timed test; run it by hand).

Per task (detect = fish scenes, segment = coral scenes, obb = diatom scenes), on synthetic data:
- training seconds per epoch (YOLO11n built from its yaml, --train images at --imgsz);
- inference images/s on whole images of side --imgsz: the model alone on decoded arrays in
  batches of --batch (one Ultralytics call per batch), and end to end through the shard engine
  (JPEG files -> decode -> predict -> Parquet);
- tiled inference on large images (--large H W) with tiles of --imgsz overlapping by a quarter:
  our batched tiler (tiles of several images per call) against SAHI's get_sliced_prediction
  (same tiles and post-processing, batch_size --batch), images/s and detections agreement.

    .venv/bin/python tests/benchmarks/detection.py --tasks detect segment obb --imgsz 320
"""

from __future__ import annotations

import argparse
import datetime
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

from aquaflow.preprocess.tiles import grid  # noqa: E402
from aquaflow.synthetic import scenes  # noqa: E402

KIND = {"detect": "fish", "segment": "coral", "obb": "diatoms"}


def cpu_model() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")


def gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t0) / reps


def bench_task(task: str, args, work: Path) -> dict:
    from aquaflow.backends.yolo import train, ultra
    from aquaflow.backends.yolo.predict import Detector
    from aquaflow.engine.detect import run_shard
    from aquaflow.tasks.detect import formats

    kind = KIND[task]
    s = args.imgsz
    data = scenes.write_dataset(kind, work / kind, args.train, max(4, args.train // 4), (s, s), seed=1)
    ds = formats.read_yolo(data, task)
    formats.materialise(ds, work / f"{kind}_data", task)
    spec = {
        "model": {"family": "yolo11", "size": "n", "weights": None},
        "imgsz": s,
        "train": {
            "epochs": args.epochs,
            "batch": args.batch,
            "nbs": 64,
            "optimizer": "auto",
            "lr0": 0.01,
            "warmup_epochs": 1,
            "patience": 0,
            "close_mosaic": 0,
            "validate_each_epoch": False,
            "seed": 0,
            "amp": False,
            "device": args.device,
            "augmentation": {
                "mosaic": 1.0,
                "fliplr": 0.5,
                "flipud": 0.0,
                "degrees": 0.0,
                "translate": 0.1,
                "scale": 0.5,
                "hsv_h": 0.015,
                "hsv_s": 0.7,
                "hsv_v": 0.4,
            },
        },
    }
    out = {
        k: work / f"{kind}_model" / n
        for k, n in (
            ("weights", "model.pt"),
            ("card", "model_card.json"),
            ("history", "history.tsv"),
            ("curve", "c.png"),
        )
    }
    card = train.run(
        name=kind,
        data_dir=work / f"{kind}_data",
        spec=spec,
        task=task,
        out=out,
        work=work / f"{kind}_train",
        ultralytics_dir=work / "ul",
        mlflow_cfg={"experiment": "aquaflow-benchmark", "results": str(work / "results")},
        threads=args.threads,
    )
    hist = pd.read_csv(out["history"], sep="\t")
    per_epoch = float(
        hist["epoch_seconds"].iloc[1:].mean() if len(hist) > 1 else hist["epoch_seconds"].iloc[0]
    )
    r = {"train_images": args.train, "train_s_per_epoch": round(per_epoch, 2)}

    settings = {"imgsz": s, "conf": 0.25, "iou": 0.7, "max_det": 300}
    dev = ultra.device_arg(args.device)
    det = Detector(ultra.load(out["weights"], task), task, settings, dev)
    rng = np.random.default_rng(2)
    whole = [scenes.make_scene(kind, rng, s, s)[0] for _ in range(args.n)]

    def run_whole():
        for i in range(0, len(whole), args.batch):
            det.predict(whole[i : i + args.batch])

    r["whole_model_img_s"] = round(args.n / timed(run_whole, args.reps), 1)
    folder = work / f"{kind}_jpg"
    scenes.write_images(kind, folder, args.n, (s, s), seed=3)
    from aquaflow.data import inputs

    table = inputs.build([{"kind": "folder", "path": str(folder), "extensions": [".jpg"]}], ".", None)
    pset = {
        **settings,
        "batch": args.batch,
        "device": args.device,
        "max_pixels": 10**9,
        "pixel_size": None,
        "tiling": {"enabled": False},
    }
    sout = {k: work / f"{kind}_shard" / f"{k}.x" for k in ("predictions", "counts", "rejected", "summary")}
    run_shard(table, out["weights"], card, sout, pset, batch_size=args.batch, device=args.device)  # warm
    t0 = time.perf_counter()
    run_shard(table, out["weights"], card, sout, pset, batch_size=args.batch, device=args.device)
    r["whole_engine_img_s"] = round(args.n / (time.perf_counter() - t0), 1)

    h, w = args.large
    large = [scenes.make_scene(kind, rng, h, w, n=12)[0] for _ in range(args.n_large)]
    tile_cfg = {
        "tile": s,
        "overlap": s // 4,
        "full_image": False,
        "merge": "nmm",
        "match_metric": "ios",
        "match_threshold": 0.5,
    }
    found: list = []

    def run_tiled():
        found[:] = det.predict_tiled(large, tile_cfg, args.batch)

    r["tiled_ours_img_s"] = round(len(large) / timed(run_tiled, args.reps), 2)
    r["tiles_per_image"] = len(grid(h, w, s, s // 4))
    if task != "segment" or args.sahi_masks:
        r.update(compare_sahi(task, out["weights"], large, found, s, args))
    return r


def compare_sahi(task, weights, large, ours, s, args) -> dict:
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics",
        model_path=str(weights),
        confidence_threshold=0.25,
        device="cpu" if args.device == "cpu" else None,
        image_size=s,
    )
    results = []

    def run_sahi():
        results[:] = [
            get_sliced_prediction(
                im,
                model,
                slice_height=s,
                slice_width=s,
                overlap_height_ratio=0.25,
                overlap_width_ratio=0.25,
                perform_standard_pred=False,
                postprocess_type="GREEDYNMM",
                postprocess_match_metric="IOS",
                postprocess_match_threshold=0.5,
                batch_size=args.batch,
                verbose=0,
            )
            for im in large
        ]

    sec = timed(run_sahi, args.reps)
    n_ours = sum(len(d) for d in ours)
    n_sahi = sum(len(r.object_prediction_list) for r in results)
    return {
        "tiled_sahi_img_s": round(len(large) / sec, 2),
        "tiled_detections_ours": n_ours,
        "tiled_detections_sahi": n_sahi,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=["detect", "segment", "obb"], choices=sorted(KIND))
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--train", type=int, default=32, help="training images")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--n", type=int, default=64, help="whole images to predict")
    ap.add_argument("--large", type=int, nargs=2, default=(1080, 1920), metavar=("H", "W"))
    ap.add_argument("--n-large", type=int, default=2)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--sahi-masks", action="store_true", help="also time SAHI on segment (slow mask merging)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    print(f"date: {datetime.date.today()}")
    print(f"cpu: {cpu_model()} ({torch.get_num_threads()} threads)")
    print(f"gpu: {gpu_name()}")
    print(f"python: {platform.python_version()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        from aquaflow.backends.yolo import ultra

        ultra.setup(Path(tmp) / "ul")
        import ultralytics

        print(f"ultralytics: {ultralytics.__version__}")
        for task in args.tasks:
            r = bench_task(task, args, Path(tmp))
            for k, v in r.items():
                print(f"{task}.{k}: {v}")
            print(json.dumps({"task": task, **r}), flush=True)


if __name__ == "__main__":
    main()
