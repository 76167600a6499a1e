"""Separation of ZooScan "multiple" vignettes on generated scans with known truth: figures printed.

Writes synthetic scans (singles, touching pairs and triples, each organism's mask known), runs
background subtraction + segmentation strip by strip as the `preprocess` step does, scores every
object (geometric multiple score) and cuts those scored multiple (aquaflow.preprocess.separate).
Prints, before separation (every segmented object taken whole), after (classical separator):

- recall: organisms recovered by an object or part with IoU >= 0.5 / organisms;
- precision: objects or parts with IoU >= 0.5 with an organism / objects or parts;
- count error per scan: (objects - organisms) / organisms;
- ESD error: mean |ESD of the object or part holding an organism's centre - its ESD| / its ESD;
- biovolume error per scan: (sum of the objects' ESD-sphere volumes - the organisms') / the organisms';
and "oracle": the objects scored multiple cut from their true instance masks
(separate.split_from_instances, the form a model-based separator plugs into): the bound a perfect
instance model would reach with this score and these lines. Also:
- the multiple score as a classifier of "several organisms" (precision, recall at the threshold).

Not a pytest test; run it by hand (about a minute per default scan):

    .venv/bin/python tests/benchmarks/zooscan_multiples.py [--scans 3] [--pairs 25] [--triples 10]
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

from aquaflow.preprocess import scan, segment  # noqa: E402
from aquaflow.preprocess import separate as sep  # noqa: E402
from aquaflow.synthetic import zooscan as zs  # noqa: E402

PAD = 8
STAGES = ("before", "after", "oracle")


def _esd(area: float) -> float:
    return 2.0 * math.sqrt(area / math.pi)


def _centre_owner(parts: list[np.ndarray], org: zs.Organism, origin: tuple[int, int]) -> np.ndarray | None:
    """The part holding the organism's centre (or the nearest part pixel's part)."""
    x, y = round(org.cx) - origin[0], round(org.cy) - origin[1]
    for p in parts:
        if 0 <= y < p.shape[0] and 0 <= x < p.shape[1] and p[y, x]:
            return p
    best, dist = None, math.inf
    for p in parts:
        ys, xs = np.nonzero(p)
        if len(xs):
            d = float(((xs - x) ** 2 + (ys - y) ** 2).min())
            if d < dist:
                best, dist = p, d
    return best


def evaluate_scan(files: dict, scene: zs.Scene, params: sep.SeparateParams) -> dict:
    """Per-scan figures before and after separation (see the module docstring)."""
    seg_params = segment.SegmentParams(pixel_size_um=zs.PIXEL_SIZE_UM, threshold="otsu", min_area_um2=10000)
    objects: list[tuple[dict, np.ndarray, np.ndarray]] = []
    scan.process_scan(
        files["scan"],
        [files[k] for k in files if k.startswith("blank")],
        seg_params,
        strip_rows=1024,
        max_object_px=473,
        padding=PAD,
        on_object=lambda row, vig, own: objects.append((row, vig, own)),
    )
    truth = zs.instances(scene)
    organisms = zs.organisms_of(truth)
    n_org = len(organisms)
    out = {"organisms": n_org, "segmented": len(objects)}
    stats = {k: {"found": 0, "good": 0, "parts": 0, "esd_err": [], "vol": 0.0} for k in STAGES}
    tp = fp = fn = 0
    seconds = 0.0
    truth_vol = sum(4 / 3 * math.pi * (_esd(a) / 2) ** 3 for a in truth["area_px"])
    for row, _vig, own in objects:
        origin = (row["bbox_x0"] - PAD, row["bbox_y0"] - PAD)
        window = (*origin, origin[0] + own.shape[1], origin[1] + own.shape[0])
        mine = []
        for o in organisms:
            m = o.mask(window)
            if (m & own).sum() > 0.5 * m.sum():
                mine.append((o, m))
        t0 = time.perf_counter()
        multiple = sep.multiple_score(row["object_solidity"], params) >= params.threshold
        if multiple:
            labels = sep.split(own, params)
            lines = sep.separation_lines(labels)
            after = [(labels == k) & ~lines for k in range(1, labels.max() + 1)]
        else:
            after = [own]
        seconds += time.perf_counter() - t0
        oracle = [own]  # the model-based path's second half fed with the true instance masks
        if multiple:
            labels = sep.split_from_instances(own, [m for _, m in mine], params.min_part_px)
            lines = sep.separation_lines(labels)
            oracle = [(labels == k) & ~lines for k in range(1, labels.max() + 1)]
        several = len(mine) > 1
        tp, fp, fn = (
            tp + (multiple and several),
            fp + (multiple and not several),
            fn + (several and not multiple),
        )
        for key, parts in (("before", [own]), ("after", after), ("oracle", oracle)):
            s = stats[key]
            found, good = sep.recovered([m for _, m in mine], parts)
            s["found"], s["good"], s["parts"] = s["found"] + found, s["good"] + good, s["parts"] + len(parts)
            s["vol"] += sum(4 / 3 * math.pi * (_esd(p.sum()) / 2) ** 3 for p in parts)
            for o, m in mine:
                p = _centre_owner(parts, o, origin)
                if p is not None:
                    s["esd_err"].append(abs(_esd(p.sum()) - _esd(m.sum())) / _esd(m.sum()))
    for key, s in stats.items():
        out[f"{key}_recall"] = s["found"] / n_org
        out[f"{key}_precision"] = s["good"] / max(1, s["parts"])
        out[f"{key}_objects"] = s["parts"]
        out[f"{key}_count_error"] = (s["parts"] - n_org) / n_org
        out[f"{key}_esd_error"] = float(np.mean(s["esd_err"]))
        out[f"{key}_biovolume_error"] = (s["vol"] - truth_vol) / truth_vol
    out["score_precision"] = tp / max(1, tp + fp)
    out["score_recall"] = tp / max(1, tp + fn)
    out["separate_seconds"] = seconds
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scans", type=int, default=3)
    ap.add_argument("--height", type=int, default=2400)
    ap.add_argument("--width", type=int, default=3200)
    ap.add_argument("--singles", type=int, default=60)
    ap.add_argument("--pairs", type=int, default=25)
    ap.add_argument("--triples", type=int, default=10)
    ap.add_argument("--overlap-px", type=float, default=6)
    ap.add_argument("--seed", type=int, default=100)
    args = ap.parse_args()
    params = sep.SeparateParams()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(args.scans):
            scene, orgs, blobs = zs.make_scene(
                args.height,
                args.width,
                args.singles,
                args.pairs,
                seed=args.seed + k,
                n_triples=args.triples,
                overlap_px=args.overlap_px,
            )
            files = zs.write_scan(tmp, f"scan{k + 1:02d}", scene, orgs, blobs, n_blanks=1)
            rows.append({"scan": f"scan{k + 1:02d}", **evaluate_scan(files, scene, params)})
    df = pd.DataFrame(rows).set_index("scan")
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        f"scans: {args.scans} x {args.height}x{args.width} px, {args.singles} singles, {args.pairs} pairs, "
        f"{args.triples} triples, overlap >= {args.overlap_px} px, seed {args.seed}"
    )
    print(f"separate params: {params}")
    pd.set_option("display.width", 200)
    print(df.T.round(3).to_string())
    total = df[["organisms", "segmented", "before_objects", "after_objects"]].sum()
    print(f"total: {total.to_dict()}")
    for key in STAGES:
        m = df[[c for c in df.columns if c.startswith(key)]].mean()
        per_scan = df[f"{key}_count_error"].round(3).tolist()
        print(
            f"{key}: recall {m[f'{key}_recall']:.3f} precision {m[f'{key}_precision']:.3f} "
            f"count_error {m[f'{key}_count_error']:+.3f} (per scan {per_scan}) "
            f"esd_error {m[f'{key}_esd_error']:.3f} biovolume_error {m[f'{key}_biovolume_error']:+.3f}"
        )
    print(
        f"multiple score: precision {df['score_precision'].mean():.3f} recall {df['score_recall'].mean():.3f}"
    )
    print(f"separate_seconds_per_object: {df['separate_seconds'].sum() / total['segmented'] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
