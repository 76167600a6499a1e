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
"oracle": the objects scored multiple cut from their true instance masks
(separate.split_from_instances, the form a model-based separator plugs into): the bound a perfect
instance model would reach with this score and these lines; and with `--train-epochs N` "model<conf>":
a YOLO11n-seg TRAINED HERE (CPU) on vignettes of other generated scans (seeds 1000+, never the
held-out ones) with their known instance masks as polygons (one class, `organism`), saved as a
model folder with its card (task segment) and used as the separator
(aquaflow.backends.yolo.instances.InstanceSeparator -> split_from_instances), exactly as
`separate.method: model` runs it. Also:
- the multiple score as a classifier of "several organisms" (precision, recall at the threshold).
- with `--score-epochs N`: the same for a timm multiple classifier trained here on the same
  training vignettes labelled single / multiple (aquaflow.backends.scorer.MultipleScorer, P(multiple)
  at the same threshold), as `separate.score: model` uses it.

Not a pytest test; run it by hand (about a minute per default scan, plus training):

    .venv/bin/python tests/benchmarks/zooscan_multiples.py [--scans 3] [--pairs 25] [--triples 10]
        [--train-epochs 20 --train-scans 2 --imgsz 160 --model-conf 0.5 0.7 0.9 --score-epochs 10]
"""

from __future__ import annotations

import argparse
import math
import os
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
TRAIN_SEED = 1000  # training scans' seeds (held-out scans use --seed, 100 by default)


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


Held = list[tuple[zs.Organism, np.ndarray]]


def scan_objects(files: dict, scene: zs.Scene) -> list[tuple[dict, np.ndarray, np.ndarray, Held]]:
    """Every segmented object of a scan (feature row, vignette, own mask; strip by strip as the
    `preprocess` step) with the organisms it holds (more than half inside) and their masks on the
    vignette's grid."""
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
    organisms = zs.organisms_of(zs.instances(scene))
    out = []
    for row, vig, own in objects:
        origin = (row["bbox_x0"] - PAD, row["bbox_y0"] - PAD)
        window = (*origin, origin[0] + own.shape[1], origin[1] + own.shape[0])
        mine = []
        for o in organisms:
            m = o.mask(window)
            if (m & own).sum() > 0.5 * m.sum():
                mine.append((o, m))
        out.append((row, vig, own, mine))
    return out


def _cut(labels: np.ndarray) -> list[np.ndarray]:
    lines = sep.separation_lines(labels)
    return [(labels == k) & ~lines for k in range(1, labels.max() + 1)]


def evaluate_scan(
    files: dict, scene: zs.Scene, params: sep.SeparateParams, separators=None, scorer=None
) -> dict:
    """Per-scan figures before and after separation (see the module docstring); with `separators`
    (name -> vignette -> instance masks) also a stage per separator; with `scorer` (vignette -> P(multiple))
    that score's precision and recall of "several organisms" at params.threshold."""
    objects = scan_objects(files, scene)
    truth = zs.instances(scene)
    n_org = len(truth)
    out = {"organisms": n_org, "segmented": len(objects)}
    separators = separators or {}
    stages = STAGES + tuple(separators)
    stats = {k: {"found": 0, "good": 0, "parts": 0, "esd_err": [], "vol": 0.0} for k in stages}
    tp = fp = fn = 0
    confusion = {"tp": 0, "fp": 0, "fn": 0}
    seconds = model_seconds = 0.0
    truth_vol = sum(4 / 3 * math.pi * (_esd(a) / 2) ** 3 for a in truth["area_px"])
    for row, vig, own, mine in objects:
        origin = (row["bbox_x0"] - PAD, row["bbox_y0"] - PAD)
        t0 = time.perf_counter()
        multiple = sep.multiple_score(row["object_solidity"], params) >= params.threshold
        after = _cut(sep.split(own, params)) if multiple else [own]
        seconds += time.perf_counter() - t0
        # the model-based path's second half fed with the true instance masks
        oracle = (
            _cut(sep.split_from_instances(own, [m for _, m in mine], params.min_part_px))
            if multiple
            else [own]
        )
        cuts = {"before": [own], "after": after, "oracle": oracle}
        for name, separator in separators.items():
            t0 = time.perf_counter()
            cuts[name] = (
                _cut(sep.split_from_instances(own, separator(vig), params.min_part_px)) if multiple else [own]
            )
            model_seconds += (time.perf_counter() - t0) / len(separators)
        several = len(mine) > 1
        if scorer is not None:
            flagged = scorer(vig) >= params.threshold
            confusion["tp"] += flagged and several
            confusion["fp"] += flagged and not several
            confusion["fn"] += several and not flagged
        tp, fp, fn = (
            tp + (multiple and several),
            fp + (multiple and not several),
            fn + (several and not multiple),
        )
        for key, parts in cuts.items():
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
    if scorer is not None:
        c = confusion
        out["classifier_precision"] = c["tp"] / max(1, c["tp"] + c["fp"])
        out["classifier_recall"] = c["tp"] / max(1, c["tp"] + c["fn"])
    out["separate_seconds"] = seconds
    out["model_seconds"] = model_seconds
    return out


def _scene(args: argparse.Namespace, seed: int) -> tuple[zs.Scene, pd.DataFrame, pd.DataFrame]:
    """A generated scan of the command line's size and groups."""
    return zs.make_scene(
        args.height,
        args.width,
        args.singles,
        args.pairs,
        seed=seed,
        n_triples=args.triples,
        overlap_px=args.overlap_px,
    )


def _polygon(mask: np.ndarray) -> np.ndarray | None:
    """The outline of a mask's largest piece, normalised to the mask's size (a YOLO-seg label)."""
    import cv2

    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return None
    c = max(contours, key=cv2.contourArea).reshape(-1, 2).astype(np.float64)
    return c / [mask.shape[1], mask.shape[0]] if len(c) >= 3 else None


def training_set(work: Path, args: argparse.Namespace) -> Path:
    """A YOLO-seg folder (formats.materialise: data.yaml, dataset.json) of the vignettes of
    `args.train_scans` generated scans, each organism's true mask inside its object as a polygon of
    class `organism`; every 8th vignette is validation. The same vignettes go to
    work/classes/train/{single,multiple}/ (the Multiple Classifier's training folder)."""
    import cv2

    from aquaflow.tasks.detect import formats

    splits = {"train": formats.Split(), "val": formats.Split()}
    n = 0
    for k in range(args.train_scans):
        scene, orgs, blobs = _scene(args, TRAIN_SEED + k)
        files = zs.write_scan(work / "scans", f"train{k + 1:02d}", scene, orgs, blobs, n_blanks=1)
        for _row, vig, own, mine in scan_objects(files, scene):
            labels = [formats.Label(0, "polygon", p) for _, m in mine if (p := _polygon(m & own)) is not None]
            if not labels:
                continue
            path = work / "vignettes" / f"v{n:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), vig)
            kind = work / "classes" / "train" / ("multiple" if len(mine) > 1 else "single") / path.name
            kind.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(kind), vig)
            split = splits["val" if n % 8 == 7 else "train"]
            split.images.append(path)
            split.labels.append(labels)
            n += 1
    ds = formats.Dataset(["organism"], splits, "generated ZooScan vignettes (known instance masks)")
    formats.materialise(ds, work / "data", "segment")
    return work / "data"


def _usecase(name: str = "zooscan") -> dict:
    """A shipped use case, validated (its defaults filled)."""
    from aquaflow.config import load_yaml, validate

    path = REPO / f"config/usecases/{name}.yaml"
    return validate(load_yaml(path), REPO / "workflow/schemas/usecase.schema.yaml", name)


def train_scorer(work: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    """A timm classifier (resnet10t, 64 px, the ZooScan use case's own recipe otherwise: class
    weights multiple 4, augmentation) trained with the engine's trainer on work/classes (written by
    training_set), saved as a model folder with its card (task classify, classes multiple/single)."""
    from aquaflow.backends import torch_train
    from aquaflow.data import dataset

    uc = _usecase()
    manifest, _, classes = dataset.build_manifest(work / "classes", uc["dataset"])
    model_cfg = {**uc["model"], "arch": "resnet10t", "input_size": 64, "pretrained": None}
    train_cfg = {**uc["training"], "epochs": args.score_epochs, "device": "cpu", "batch_size": 32}
    images = dataset.manifest_images_root(work / "classes", uc["dataset"])
    t0 = time.perf_counter()
    result, best = torch_train.train(manifest, images, classes, model_cfg, train_cfg, args.threads)
    seconds = time.perf_counter() - t0
    folder = work / "scorer"
    folder.mkdir(parents=True, exist_ok=True)
    torch_train.write_outputs(
        best,
        result,
        manifest,
        classes,
        model_cfg,
        train_cfg,
        folder / "model.safetensors",
        folder / "model_card.json",
        work / "scorer_history.tsv",
        {},
    )
    counts = manifest.groupby(["split", "label"]).size().to_dict()
    return folder, {
        "images": {f"{a}/{b}": int(v) for (a, b), v in counts.items()},
        "epochs": result.epochs_run,
        "seconds": round(seconds, 1),
        "val_macro_f1": round(result.best_val_macro_f1, 3),
    }


def train_separator(work: Path, args: argparse.Namespace) -> tuple[Path, dict]:
    """A YOLO11n-seg trained on `training_set` with the engine's Ultralytics trainer, on the CPU;
    returns the model folder (model.pt + model_card.json, task segment) and training facts."""
    from aquaflow.backends.yolo import train, ultra
    from aquaflow.io import read_json
    from aquaflow.models.artifacts import write_card

    ultra.setup(work / "ultralytics")
    data = work / "data"  # training_set
    facts = read_json(data / "dataset.json")
    # the engine's detection defaults (a shipped segment use case, validated), then small-CPU settings
    spec = _usecase("cold_coral")["detection"]
    spec["imgsz"] = args.imgsz
    spec["train"].update(
        epochs=args.train_epochs,
        batch=8,
        nbs=8,  # one optimiser step per batch: few images, few epochs
        patience=0,
        validate_each_epoch=False,
        close_mosaic=0,
        device="cpu",
        warmup_epochs=1,
    )
    spec["train"]["augmentation"].update(mosaic=0.0, flipud=0.5)
    folder = work / "model"
    folder.mkdir(parents=True, exist_ok=True)
    out = {"weights": folder / "model.pt", "history": work / "history.tsv", "curve": work / "curve.png"}
    model = ultra.build(spec["model"], "segment")
    targs = train.train_args(spec, data / "data.yaml", work / "train", args.threads)
    _, seconds, hist = train.fit(model, targs, out)
    card = train.model_card(spec, "segment", targs, facts, out["weights"], seconds, len(hist))
    write_card(card, folder / "model_card.json")
    return folder, {
        "images": {k: v["images"] for k, v in facts["splits"].items()},
        "objects": {k: v["objects"] for k, v in facts["splits"].items()},
        "epochs": len(hist),
        "seconds": round(seconds, 1),
        **{k: round(v, 3) for k, v in train.final_metrics(model.trainer).items() if "(M)" in k},
    }


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
    ap.add_argument("--train-epochs", type=int, default=0, help="> 0: train a YOLO11n-seg separator here")
    ap.add_argument("--train-scans", type=int, default=2, help="generated scans whose vignettes it trains on")
    ap.add_argument("--imgsz", type=int, default=160, help="the separator's input size")
    ap.add_argument(
        "--model-conf",
        type=float,
        nargs="+",
        default=[0.5],
        help="its instances scored below are ignored (one row each)",
    )
    ap.add_argument("--score-epochs", type=int, default=0, help="> 0: train a timm multiple classifier here")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    params = sep.SeparateParams()
    rows = []
    trained: dict = {}
    scored: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        separators, scorer = {}, None
        work = Path(tmp) / "training"
        if args.train_epochs or args.score_epochs:
            training_set(work, args)
        if args.train_epochs:
            from aquaflow.backends import load_instance_separator

            folder, trained = train_separator(work, args)
            separators = {
                f"model{c:g}": load_instance_separator(folder, c, args.threads) for c in args.model_conf
            }
        if args.score_epochs:
            from aquaflow.backends.scorer import MultipleScorer

            folder, scored = train_scorer(work, args)
            scorer = MultipleScorer(folder, args.threads)
        for k in range(args.scans):
            scene, orgs, blobs = _scene(args, args.seed + k)
            files = zs.write_scan(tmp, f"scan{k + 1:02d}", scene, orgs, blobs, n_blanks=1)
            rows.append(
                {"scan": f"scan{k + 1:02d}", **evaluate_scan(files, scene, params, separators, scorer)}
            )
    df = pd.DataFrame(rows).set_index("scan")
    print(f"machine: {platform.node()} {platform.processor() or platform.machine()}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, load {os.getloadavg()[0]:.1f}")
    print(
        f"scans: {args.scans} x {args.height}x{args.width} px, {args.singles} singles, {args.pairs} pairs, "
        f"{args.triples} triples, overlap >= {args.overlap_px} px, seed {args.seed}"
    )
    print(f"separate params: {params}")
    if trained:
        print(
            f"model: YOLO11n-seg trained here on {args.train_scans} other scans (seeds {TRAIN_SEED}+), "
            f"imgsz {args.imgsz}, conf {args.model_conf}: {trained}"
        )
    pd.set_option("display.width", 200)
    print(df.T.round(3).to_string())
    total = df[["organisms", "segmented", "before_objects", "after_objects"]].sum()
    print(f"total: {total.to_dict()}")
    for key in STAGES + tuple(f"model{c:g}" for c in (args.model_conf if trained else [])):
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
    if scored:
        print(
            f"multiple classifier (timm resnet10t, 64 px, trained here: {scored}): precision "
            f"{df['classifier_precision'].mean():.3f} recall {df['classifier_recall'].mean():.3f}"
        )
    if trained:
        print(f"model_seconds_per_object: {df['model_seconds'].sum() / total['segmented'] * 1000:.2f} ms")
    print(f"separate_seconds_per_object: {df['separate_seconds'].sum() / total['segmented'] * 1000:.2f} ms")


if __name__ == "__main__":
    main()
