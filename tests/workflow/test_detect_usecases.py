"""The four detection use cases end to end on generated scenes, on CPU, with the network blocked.

One Snakemake run: fish (detect) trains YOLO11n from its yaml (no pretrained weights) to a real
detector, evaluates it and predicts its campaigns; coral (segment) and diatoms (obb) train the same
way on a token budget (what is tested there is the path: training, evaluation, the campaign's
outputs, with a low `conf`), and beach (segment, tiled) is given an untrained model (its head set by
hand, tests/detect_models.py) that predicts large images tile by tile. The fish use case has a second
campaign, a folder mixing good images with zero-byte, truncated, non-image and oversized files.
Every Python process of the run has the network guard (tests/netguard) and, where `unshare` works,
the run has no network namespace at all.

One learned mAP50 floor (fish; benchmark of record: pycocotools): a pipeline that mixes up
coordinates, classes or image ids scores ~0. That every task's evaluation scores the truth 1 and
moved truth ~0 is `test_ground_truth_scores_one_and_shifted_truth_scores_zero` (below), fed the
ground truth itself, without a model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from aquaflow.synthetic import scenes
from tests.conftest import REPO, workflow_cmd, write_workdir
from tests.detect_models import seeded_head_model

pytestmark = pytest.mark.workflow

FLOOR = 0.5  # fish mAP50 (pycocotools), measured: see FISH_TRAIN
KIND = {"fish": "fish", "coral": "coral", "diatoms": "diatoms", "beach": "beach"}
CONFIG = {"fish": "fish_detection", "coral": "cold_coral", "diatoms": "diatoms", "beach": "beach"}
TRAINED = ["fish", "coral", "diatoms"]  # beach: a given model
SIZE = 96  # fish: scenes, training and tiles (the tile-border and SAHI tests below)
TOKEN = 64  # coral, diatoms and beach: scenes and image size of the token-budget use cases
MAX_PIXELS = 300 * 300
FISH_IMAGES = (48, 24)  # train, val
FISH_TRAIN = {"epochs": 20, "lr0": 0.01, "warmup_epochs": 0}  # 120 steps of 8 images
TOKEN_TRAIN = {"epochs": 1, "lr0": 0.003, "warmup_epochs": 0}  # one pass: the path, not the model
CONF = {"fish": 0.25, "coral": 0.001, "diatoms": 0.001, "beach": 0.1}  # low: plumbing under test


def usecase(name: str, data) -> dict:
    uc = yaml.safe_load((REPO / f"config/usecases/{CONFIG[name]}.yaml").read_text())
    uc["source"] = {"kind": "path", "path": str(data)}
    det = uc["detection"]
    det["imgsz"] = SIZE if name == "fish" else TOKEN
    det["train"] = {
        **(FISH_TRAIN if name == "fish" else TOKEN_TRAIN),
        "batch": 8,
        "nbs": 8,
        "optimizer": "AdamW",
        "close_mosaic": 0,
        "validate_each_epoch": False,
        "device": "cpu",
        "augmentation": {"mosaic": 0.0, "scale": 0.2, "translate": 0.05},
    }
    det["predict"].update(device="cpu", batch=16, max_pixels=MAX_PIXELS, conf=CONF[name])
    if name != "fish":
        det["predict"]["max_det"] = 10
    det["overlays"] = 3
    return uc


def fault_folder(folder, good_from) -> dict[str, str]:
    """Two good images plus one of each fault; returns {file name: expected reason}."""
    folder.mkdir(parents=True)
    expected = {}
    for i, src in enumerate(sorted(good_from.glob("*.png"))[:2]):
        shutil.copy(src, folder / f"good_{i}.png")
        expected[f"good_{i}.png"] = ""
    (folder / "zero.jpg").write_bytes(b"")
    expected["zero.jpg"] = "zero_bytes"
    _, buf = cv2.imencode(".jpg", np.full((80, 80, 3), 120, np.uint8))
    (folder / "truncated.jpg").write_bytes(buf.tobytes()[: len(buf) // 2])
    expected["truncated.jpg"] = "truncated"
    (folder / "notes.png").write_text("this is not an image\n")
    expected["notes.png"] = "not_an_image"
    cv2.imwrite(str(folder / "huge.png"), np.zeros((400, 400, 3), np.uint8))
    expected["huge.png"] = "too_large"
    return expected


CAMPAIGN_OUTPUTS = ("predictions.parquet", "counts.parquet", "detections.json", "summary.json", "overlays")


def targets(ucs: dict[str, dict]) -> list[str]:
    """Every use case's model, evaluation and campaign outputs; the exports, the MLflow inference
    run and the campaigns' summary for fish's demo campaign only: every rule of the detection
    workflow runs once under the network guard, with fewer jobs (the exports of every task are
    test_detect_exports, the inference runs test_detect_campaign_tracking)."""
    out = []
    for uc, cfg in ucs.items():
        out.append(f"results/{uc}/model/model_card.json")
        if uc in TRAINED:
            out += [f"results/{uc}/model/training_curve.png", f"results/{uc}/eval/metrics.json"]
        for campaign in cfg["campaigns"]:
            out += [f"results/{uc}/campaigns/{campaign}/{name}" for name in CAMPAIGN_OUTPUTS]
    demo = "results/fish/campaigns/demo"
    out += [f"{demo}/mlflow_run.json", "results/fish/campaigns/summary.tsv"]
    out += [f"{demo}/export/{name}_fish_demo.{ext}" for name, ext in FISH_EXPORTS]
    return out


FISH_EXPORTS = (("ecotaxa", "tsv"), ("ecotaxa", "zip"), ("rocrate", "zip"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detect")
    ucs = {}
    for name in TRAINED:
        n_train, n_val = FISH_IMAGES if name == "fish" else (8, 4)
        size = (SIZE, SIZE) if name == "fish" else (TOKEN, TOKEN)
        data = scenes.write_dataset(KIND[name], tmp / "data" / name, n_train, n_val, size, seed=3).parent
        ucs[name] = usecase(name, data)
    # the fish use case: a second campaign with a folder of good and broken files
    faults = fault_folder(tmp / "faults", tmp / "data/fish/images/val")
    ucs["fish"]["campaigns"]["faults"] = {"inputs": [{"kind": "folder", "path": str(tmp / "faults")}]}
    # the beach use case: a given model, its campaign large images predicted tile by tile
    beach = usecase("beach", None)
    del beach["source"], beach["detection"]["train"]
    beach["model"] = {"source": "path", "path": str(tmp / "models/beach")}
    beach["detection"]["predict"]["tiling"].update(tile=TOKEN, overlap=16, full_image=True)
    seeded_head_model(tmp / "models/beach", "segment", list(scenes.KINDS["beach"][1]), TOKEN)
    scenes.write_images("beach", tmp / "beach_large", 3, (224, 352), seed=9)
    beach["campaigns"] = {"large": {"inputs": [{"kind": "folder", "path": str(tmp / "beach_large")}]}}
    ucs["beach"] = beach
    wd = write_workdir(tmp / "wd", ucs)
    netlog = tmp / "network_attempts.log"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI" and not k.startswith("YOLO_")}
    env |= {
        "PYTHONPATH": os.pathsep.join([str(REPO / "tests/netguard"), str(REPO / "scripts")]),
        "AQUAFLOW_NETGUARD_LOG": str(netlog),
    }
    cmd = workflow_cmd(wd, *targets(ucs), "--cores", "2", "--resources", "gpu=1", "--set-scatter", "infer=1")
    if subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0:
        cmd = ["unshare", "-rn", *cmd]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{proc.stderr[-6000:]}")
    return {
        "wd": wd,
        "res": wd / "results",
        "faults": faults,
        "netlog": netlog,
        "seconds": seconds,
        "tmp": tmp,
    }


def test_no_network_attempted(run):
    attempts = run["netlog"].read_text() if run["netlog"].exists() else ""
    assert attempts == "", attempts
    homes = [p for p in run["res"].glob("*/detect/ultralytics/Ultralytics/settings.json")]
    assert len(homes) == 4  # Ultralytics' settings live in each use case's results folder
    print(f"detection workflow (4 use cases): {run['seconds']:.0f} s")


@pytest.mark.parametrize("uc", TRAINED)
def test_model_card_and_metrics_floor(run, uc):
    res = run["res"] / uc
    card = json.loads((res / "model/model_card.json").read_text())
    task = scenes.KINDS[KIND[uc]][0]
    assert card["format"] == "ultralytics" and card["task"] == task and card["backend"] == "ultralytics"
    assert card["classes"] == list(scenes.KINDS[KIND[uc]][1])
    from aquaflow.io import sha256_file

    assert card["id"] == sha256_file(res / "model/model.pt")
    assert card["training"]["pretrained"] is False and card["training"]["amp"] is False
    m = json.loads((res / "eval/metrics.json").read_text())
    rec = m["record"]
    print(f"{uc}: {rec} {card['training']['seconds_per_epoch']} s/epoch, P/R {m['at_threshold']['all']}")
    if uc == "fish":  # the one learned floor; the others trained a token budget
        assert rec["mAP50"] >= FLOOR, rec
    assert 0 <= rec["mAP50_95"] <= rec["mAP50"] <= 1
    iv = m["intervals"]  # bootstrap over images; mAP's only where pycocotools is the record
    assert ("mAP50" in iv) == (task != "obb") and iv["resamples"] == 1000
    for name in ("mAP50", "recall", "f1", *(f"precision/{c}" for c in card["classes"])):
        if name in iv:
            assert 0 <= iv[name][0] <= iv[name][1] <= 1, (name, iv[name])
    if task == "detect":
        assert rec["source"] == "pycocotools bbox"
    if task == "segment":
        assert rec["source"] == "pycocotools segm" and m["at_threshold"]["iou_kind"] == "mask"
        # its boxes scored too (that they score the truth 1: test_ground_truth_scores_one_...)
        assert 0 <= m["coco_bbox"]["mAP50"] <= 1 and set(m["coco_bbox"]["per_class"]) == set(card["classes"])
    if task == "obb":
        assert rec["source"].startswith("ultralytics obb")
    u = m["ultralytics"]["mask" if task == "segment" else "box"]["mAP50"]
    assert abs(u - rec["mAP50"]) < 0.25, (u, rec)  # two implementations of the same figure agree
    per_class = pd.read_csv(res / "eval/per_class.tsv", sep="\t")
    assert list(per_class["class"]) == card["classes"]
    assert (per_class["tp"] + per_class["fn"]).sum() > 0


def _campaign(run, uc, campaign):
    return run["res"] / uc / "campaigns" / campaign


@pytest.mark.parametrize(
    ("uc", "campaign"), [("fish", "demo"), ("coral", "demo"), ("diatoms", "demo"), ("beach", "large")]
)
def test_campaign_outputs_validate(run, uc, campaign):
    """COCO results load with pycocotools; Parquet schema; counts per image = detection rows."""
    from pycocotools.coco import COCO

    c = _campaign(run, uc, campaign)
    task = scenes.KINDS[KIND[uc]][0]
    table = pd.read_parquet(c / "predictions.parquet")
    counts = pd.read_parquet(c / "counts.parquet")
    summary = json.loads((c / "summary.json").read_text())
    assert summary["seen"] == summary["predicted"] == len(counts) > 0
    assert len(table) > 0
    per_image = table.groupby("seq").size()
    merged = counts.set_index("seq")["n"]
    assert merged.sum() == len(table)
    assert (per_image == merged[per_image.index]).all()
    for cls in json.loads((run["res"] / uc / "model/model_card.json").read_text())["classes"]:
        assert (counts[f"n_{cls}"].sum()) == (table["class"] == cls).sum()
    names = pq.read_schema(c / "predictions.parquet").names
    for col in (
        "seq",
        "id",
        "source",
        "det",
        "class",
        "class_id",
        "score",
        "x",
        "y",
        "w",
        "h",
        "area_px",
        "image_width",
        "image_height",
        "model_id",
        "run_id",
    ):
        assert col in names
    assert ("rle" in names) == (task == "segment") and ("obb_corners" in names) == (task == "obb")
    if uc in ("coral", "diatoms", "beach"):  # a pixel size is configured
        unit = {"coral": "cm", "diatoms": "um", "beach": "cm"}[uc]
        assert (table[f"area_{unit}2"] > 0).all()
    assert (table["score"] >= CONF[uc] - 1e-6).all() or task == "obb"
    if task == "obb":  # rotated boxes of a token-budget model may reach past the image: their centres
        cx, cy = table["x"] + table["w"] / 2, table["y"] + table["h"] / 2
        assert (cx.between(-1, table["image_width"] + 1) & cy.between(-1, table["image_height"] + 1)).all()
    else:
        assert ((table["x"] >= -1) & (table["x"] + table["w"] <= table["image_width"] + 1)).all()
    gt = COCO(str(c / "coco_images.json"))
    dt = gt.loadRes(str(c / "detections.json"))
    assert len(dt.getAnnIds()) == len(table)
    overlays = sorted((c / "overlays").glob("*.png"))
    assert 1 <= len(overlays) <= 3
    assert (
        table["model_id"] == json.loads((run["res"] / uc / "model/model_card.json").read_text())["id"]
    ).all()


def test_beach_tiled_campaign_covers_the_large_images(run):
    c = _campaign(run, "beach", "large")
    card = json.loads((run["res"] / "beach/model/model_card.json").read_text())
    assert card["task"] == "segment" and card["classes"] == list(scenes.KINDS["beach"][1])
    assert card["imported_from"] == {"source": "path", "path": str(run["tmp"] / "models/beach")}
    counts = pd.read_parquet(c / "counts.parquet")
    assert set(zip(counts["image_width"], counts["image_height"], strict=True)) == {(352, 224)}
    assert json.loads((c / "summary.json").read_text())["shards"]["1-of-1"]["tiled"] is True
    table = pd.read_parquet(c / "predictions.parquet")
    # detections on every image, some of them beyond the first tile (tile offsets applied)
    assert table.groupby("seq").size().min() >= 1
    assert (table["x"] + table["w"] > TOKEN).any()


def test_fault_folder_rejected_with_reasons(run):
    c = _campaign(run, "fish", "faults")
    summary = json.loads((c / "summary.json").read_text())
    rejected = pd.read_parquet(c / "rejected.parquet")
    counts = pd.read_parquet(c / "counts.parquet")
    expected = run["faults"]
    assert summary["seen"] == len(expected)
    assert summary["predicted"] + summary["rejected"] == summary["seen"]
    got = {os.path.basename(s): r for s, r in zip(rejected["source"], rejected["reason"], strict=True)}
    assert got == {k: v for k, v in expected.items() if v}
    assert sorted(os.path.basename(s) for s in counts["source"]) == sorted(
        k for k, v in expected.items() if not v
    )
    assert (rejected["detail"].str.len() > 0).sum() >= 3  # the reason comes with a detail


TILE, OVERLAP = SIZE, 32  # tiles at x, y = 0, 64, 128, 192 on a 288 x 160 image (SAHI's grid too)


def large_fish_image(seed: int = 5):
    """A 160 x 288 underwater scene: fish A across the right border of the first tile column
    (x 76..116; tile 0 is x 0..95), fish B inside the last column; returns image, truth boxes."""
    rng = np.random.default_rng(seed)
    img, _ = scenes.make_scene("fish", rng, 160, 288, n=0)
    img = img.copy()
    a = scenes.place("fish", rng, img, 0, 96.0, 80.0, 40.0)
    b = scenes.place("fish", rng, img, 1, 236.0, 116.0, 32.0)
    boxes = [np.concatenate([o.polygon.min(0), o.polygon.max(0)]) for o in (a, b)]
    return img, boxes, [0, 1]


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def fish_detector(run):
    from aquaflow.backends.yolo import ultra
    from aquaflow.backends.yolo.predict import Detector

    ultra.setup(run["tmp"] / "ultralytics")
    weights = run["res"] / "fish/model/model.pt"
    settings = {"imgsz": SIZE, "conf": 0.25, "iou": 0.7, "max_det": 300}
    return Detector(ultra.load(weights, "detect"), "detect", settings, "cpu"), weights


def tiling(merge: str) -> dict:
    return {
        "tile": TILE,
        "overlap": OVERLAP,
        "full_image": False,
        "merge": merge,
        "match_metric": "ios",
        "match_threshold": 0.5,
    }


def test_object_across_a_tile_border_is_found_exactly_once(fish_detector):
    det, _ = fish_detector
    img, truth, classes = large_fish_image()
    (merged,) = det.predict_tiled([img], tiling("nmm"), batch_size=16)
    (raw,) = det.predict_tiled([img], tiling("none"), batch_size=16)
    for box, cls in zip(truth, classes, strict=True):
        hits = [i for i in range(len(merged)) if _iou(merged.xyxy[i], box) >= 0.5]
        assert len(hits) == 1, (box, merged.xyxy, merged.score)
        assert merged.cls[hits[0]] == cls
    # fish A lies in two tiles whole and two tiles in part: without merging it is found repeatedly
    assert sum(_iou(b, truth[0]) > 0.2 for b in raw.xyxy) >= 2


def test_batched_tiler_matches_sahi(fish_detector, monkeypatch):
    """Our tiler against SAHI's sliced prediction on the same model, tiles and post-processing
    (GREEDYNMM, IOS 0.5): stated tolerance: at least 90 % of each side's detections have a partner
    of the same class with IoU >= 0.8 on the other side, and per-image counts differ by at most 1."""
    from PIL import Image
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    # SAHI's readers switch Pillow's decompression-bomb guard off for the whole process: undo it after
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    det, weights = fish_detector
    images = [large_fish_image(seed)[0] for seed in (5, 6)]
    rng = np.random.default_rng(11)
    images += [scenes.make_scene("fish", rng, 160, 288, n=5)[0] for _ in range(2)]
    sahi_model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics",
        model_path=str(weights),
        confidence_threshold=0.25,
        device="cpu",
        image_size=SIZE,
    )
    ours = det.predict_tiled(images, tiling("nmm"), batch_size=16)
    matched = total = 0
    for img, mine in zip(images, ours, strict=True):
        res = get_sliced_prediction(
            img,
            sahi_model,
            slice_height=TILE,
            slice_width=TILE,
            overlap_height_ratio=OVERLAP / TILE,
            overlap_width_ratio=OVERLAP / TILE,
            perform_standard_pred=False,
            postprocess_type="GREEDYNMM",
            postprocess_match_metric="IOS",
            postprocess_match_threshold=0.5,
            batch_size=16,
            verbose=0,
        )
        theirs = [(p.bbox.to_xyxy(), p.category.id) for p in res.object_prediction_list]
        assert abs(len(theirs) - len(mine)) <= 1, (len(theirs), len(mine))
        for box, cls in theirs:
            total += 1
            matched += any(mine.cls[i] == cls and _iou(mine.xyxy[i], box) >= 0.8 for i in range(len(mine)))
        for i in range(len(mine)):
            total += 1
            matched += any(cls == mine.cls[i] and _iou(mine.xyxy[i], box) >= 0.8 for box, cls in theirs)
    assert total > 8
    assert matched / total >= 0.9, (matched, total)


def _truth_as_detections(task: str, labels, h: int, w: int, dx: float = 0.0):
    """The ground truth of one image as the detections a perfect model returns (score 1), every
    shape moved `dx` pixels to the right (0: exact)."""
    from aquaflow.tasks.detect.detections import Detections

    boxes, obb, masks = [], [], []
    for lab in labels:
        boxes.append(lab.xyxy() * [w, h, w, h] + [dx, 0, dx, 0])
        if task == "segment":
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [(lab.coords * [w, h] + [dx, 0]).round().astype(np.int32)], 1)
            masks.append(m.astype(bool))
        if task == "obb":  # corners p0..p3 of a rectangle -> centre, sides, angle
            p = lab.coords * [w, h] + [dx, 0]
            v1, v2 = (p[0] + p[1]) / 2 - p.mean(0), (p[0] - p[1]) / 2
            obb.append([*p.mean(0), 2 * np.hypot(*v1), 2 * np.hypot(*v2), np.arctan2(v1[1], v1[0])])
    n = len(labels)
    return Detections(
        np.asarray(boxes, np.float32).reshape(n, 4),
        np.ones(n, np.float32),
        np.array([lab.cls for lab in labels], np.int64),
        np.asarray(obb, np.float32).reshape(n, 5) if task == "obb" else None,
        masks if task == "segment" else None,
        h,
        w,
    )


@pytest.mark.parametrize("kind", ["fish", "coral", "diatoms"])
def test_ground_truth_scores_one_and_shifted_truth_scores_zero(kind, tmp_path):
    """The evaluation path of every detection task (labels written for Ultralytics and read back,
    COCO ground truth, detection rows, COCO results, pycocotools, matching at a threshold) fed the
    truth itself: mAP 1 and every object matched; fed the truth moved by 40 px: mAP ~0, nothing
    matched. A mix-up of coordinates, classes, image ids or masks anywhere scores below 1."""
    from aquaflow.engine import evaluate_detect as ev
    from aquaflow.tasks.detect import formats, outputs

    task, classes = scenes.KINDS[kind][0], list(scenes.KINDS[kind][1])
    data = scenes.write_dataset(kind, tmp_path / "src", 2, 6, (SIZE, SIZE), seed=4)
    formats.materialise(formats.read_yolo(data, task), tmp_path / "ds", task)
    split = formats.read_yolo(tmp_path / "ds/data.yaml", task).splits["val"]
    assert sum(len(labs) for labs in split.labels) >= 6 and {
        lab.cls for labs in split.labels for lab in labs
    } == {0, 1}
    for dx, want in ((0.0, 1.0), (40.0, 0.0)):
        found = [_truth_as_detections(task, labs, SIZE, SIZE, dx) for labs in split.labels]
        at = ev.threshold_metrics(task, found, split.labels, 0.25, classes)
        n = sum(len(labs) for labs in split.labels)
        assert at["all"]["tp"] == want * n and at["all"]["recall"] == want, at["all"]
        assert at["all"]["fp"] == (1 - want) * n
        if want:
            assert at["mean_matched_iou"] > 0.99, at
        if task == "obb":  # pycocotools cannot score rotated boxes (Ultralytics' val does, trained)
            continue
        results = outputs.coco_results(ev.detections_table(found, task, classes), task)
        gt_json = tmp_path / "ds/coco_val.json"
        kinds = ["bbox", "segm"] if task == "segment" else ["bbox"]
        for iou_type in kinds:
            rec = ev.coco_eval(gt_json, results, iou_type, classes)
            if want:
                assert rec["mAP50"] == pytest.approx(1.0), (iou_type, rec)
                # segm: OpenCV's and pycocotools' rasterisations of one polygon differ at the border
                # pixels, which on objects a few pixels wide costs IoU at the strict thresholds
                assert rec["mAP50_95"] > (0.95 if iou_type == "bbox" else 0.6), (iou_type, rec)
                assert all(v["AP50"] == pytest.approx(1.0) for v in rec["per_class"].values()), rec
            else:
                assert rec["mAP50"] < 0.05, (iou_type, rec)
