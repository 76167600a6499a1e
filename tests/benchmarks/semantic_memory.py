"""Peak memory and speed of tiled semantic prediction, a small raster vs one >= 10x larger.

Trains a small U-Net (the oil_spill use case's, a few epochs) on synthetic SAR-like scenes
(aquaflow.synthetic.sar), writes a small raster and a large one (the same scenes tiled side by
side, written window by window), then predicts each in its own child process through
`aquaflow.engine.semantic.predict_raster` (tiled, blended, class + probability COGs, polygons) and
prints `name: value` lines: raster sizes, seconds, megapixels per second, the child's peak resident
memory (VmHWM) and the ratio large/small. Not a pytest test (minutes); run it by hand:

    .venv/bin/python tests/benchmarks/semantic_memory.py [--small 512] [--factor 4] [--epochs 3]
        [--block 0] [--train-size 256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO))

import yaml  # noqa: E402

from aquaflow.synthetic import sar  # noqa: E402
from tests.benchmarks.loader import print_machine  # noqa: E402

CHILD = """
import sys, json, time
sys.path.insert(0, {scripts!r})
import rasterio
from aquaflow.backends.smp_model import SemanticPredictor
from aquaflow.data.rasters import grid_of, read_window
from aquaflow.engine.semantic import GDAL_CACHE_MB
from aquaflow.io import read_json
from aquaflow.tasks.semantic import outputs
from aquaflow.tasks.semantic.tiling import Tiling, predict_blocks
def status(key):
    return [int(x.split()[1]) for x in open("/proc/self/status") if x.startswith(key)][0]
card = read_json({card!r})
predictor = SemanticPredictor.load({weights!r}, card, "cpu", {threads})
base = status("VmRSS:")
grid = grid_of({image!r})
t0 = time.perf_counter()
# the steps of aquaflow.engine.semantic.predict_raster, peak memory read after each
with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), rasterio.open({image!r}) as src:
    read = lambda r, c, h, w: read_window(src, r, c, h, w, card["bands"], card["normalization"])
    blocks = predict_blocks(read, grid.height, grid.width, predictor, Tiling(**{tiling!r}))
    outputs.write_prediction(blocks, grid, card["classes"], {out!r} + "_c.tif", {out!r} + "_p.tif")
    predict_s, predict_hwm = time.perf_counter() - t0, status("VmHWM:")
    found = outputs.write_polygons({out!r} + "_c.tif", card["classes"], {out!r} + ".gpkg", skip=["sea"],
                                   strip={tiling!r}["block"])
print(json.dumps({{"seconds": time.perf_counter() - t0, "predict_seconds": predict_s,
                  "predict_hwm_kb": predict_hwm, "hwm_kb": status("VmHWM:"), "base_kb": base,
                  "polygons": sum(found.values()), "pixels": grid.height * grid.width}}))
"""


def mosaic(scenes: list[Path], out: Path, factor: int) -> None:
    """A factor x factor mosaic of the scenes (cycled), written window by window."""
    import rasterio
    from rasterio.windows import Window

    with rasterio.open(scenes[0]) as src:
        profile, side = src.profile, src.width
    profile.update(width=side * factor, height=side * factor, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(out, "w", **profile) as dst:
        for i in range(factor * factor):
            with rasterio.open(scenes[i % len(scenes)]) as src:
                dst.write(
                    src.read(1), 1, window=Window((i % factor) * side, (i // factor) * side, side, side)
                )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=512, help="side of the small raster (px)")
    ap.add_argument("--block", type=int, default=0, help="output block side (0: the use case's)")
    ap.add_argument("--train-size", type=int, default=256, help="side of the 4 training scenes")
    ap.add_argument("--factor", type=int, default=4, help="the large raster is factor x factor small ones")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print_machine(args.threads)
    print(f"load before: {os.getloadavg()}")
    uc = yaml.safe_load((REPO / "config/usecases/oil_spill.yaml").read_text())["semantic"]
    from aquaflow.backends import smp_train

    train_cfg = {
        **uc["train"],
        "seed": 0,
        "tile": 128,
        "tile_overlap": 32,
        "epochs": args.epochs,
        "weight_decay": 1e-4,
        "loss": {"ce": 1.0, "dice": 1.0, "focal": 0.0},
        "lr": 0.002,
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sar.make(tmp / "train", scenes=4, size=args.train_size, seed=0)
        pairs = [
            (str(p), str(tmp / "train/labels" / p.name)) for p in sorted((tmp / "train/images").glob("*.tif"))
        ]
        model_cfg = {**uc["model"], "bands": uc["bands"]}
        net, history, record = smp_train.train(
            pairs[:3], pairs[3:], uc["classes"], model_cfg, train_cfg, args.threads
        )
        smp_train.write_model(
            net, record, uc["classes"], model_cfg, train_cfg, tmp / "m.safetensors", tmp / "card.json"
        )
        seconds, iou = history["seconds"].sum(), history["val_mean_iou"].iloc[-1]
        print(f"training: {args.epochs} epochs, {seconds:.1f} s, val mean IoU {iou:.3f}")
        sar.make(tmp / "small", scenes=1, size=args.small, seed=1)
        sar.make(tmp / "tiles", scenes=4, size=args.small, seed=2)
        mosaic(sorted((tmp / "tiles/images").glob("*.tif")), tmp / "large.tif", args.factor)
        tiling = {k: uc["predict"][k] for k in ("tile", "overlap", "block", "batch")}
        tiling["block"] = args.block or tiling["block"]
        results = {}
        for name, image in (("small", tmp / "small/images/scene_00.tif"), ("large", tmp / "large.tif")):
            code = CHILD.format(
                scripts=str(REPO / "scripts"),
                card=str(tmp / "card.json"),
                weights=str(tmp / "m.safetensors"),
                threads=args.threads,
                out=str(tmp / name),
                image=str(image),
                tiling=tiling,
            )
            proc = subprocess.run(
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
            )
            if proc.returncode:
                sys.exit(f"prediction failed:\n{proc.stderr}")
            results[name] = r = json.loads(proc.stdout.strip().splitlines()[-1])
            mpx = r["pixels"] / 1e6
            print(
                f"{name}: {mpx:.2f} Mpx, {r['seconds']:.1f} s ({mpx / r['predict_seconds']:.3f} Mpx/s "
                f"prediction), peak RSS after prediction {r['predict_hwm_kb'] / 1024:.0f} MB, after "
                f"polygons {r['hwm_kb'] / 1024:.0f} MB (after loading the model "
                f"{r['base_kb'] / 1024:.0f} MB), polygons {r['polygons']}"
            )
        ratio = results["large"]["predict_hwm_kb"] / results["small"]["predict_hwm_kb"]
        with_polygons = results["large"]["hwm_kb"] / results["small"]["hwm_kb"]
        pixels = results["large"]["pixels"] / results["small"]["pixels"]
        print(f"pixels ratio: {pixels:.0f}x; peak RSS ratio large/small: prediction {ratio:.3f}, ")
        print(f"with polygons {with_polygons:.3f} (polygons streamed strip by strip of `block` rows)")
        print(f"tiling: {tiling}; load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
