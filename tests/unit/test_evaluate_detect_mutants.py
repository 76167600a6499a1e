"""evaluate_detect.run end to end on a real (untrained, 2-class) YOLO model: the held-out split is
labelled with the model's own best box per image plus a box it misses, so every figure is non-zero
and known from the library's parts (COCOeval, greedy matching, Ultralytics' val). The val split
lacks the missed boxes, so scoring the wrong split changes the figures."""

from __future__ import annotations

import json
import logging
from logging.handlers import BufferingHandler

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from aquaflow.backends.yolo import ultra
from aquaflow.backends.yolo.predict import Detector
from aquaflow.engine import evaluate_detect as ev
from aquaflow.tasks.detect import formats, outputs

CLASSES = ["x", "y"]
TILING = {"tile": 32, "overlap": 8, "full_image": False, "merge": "nms", "match_metric": "iou"}
TILING |= {"match_threshold": 0.5}
# tiling configured but `evaluate.tiled` off: the split is predicted whole
PREDICT = {"iou": 0.6, "max_det": 8, "batch": 2, "device": "cpu", "tiling": TILING}


def _label_rows(det, w: int, h: int, corner: bool = True) -> str:
    """The model's best box (its class) and a small box of the other class in a corner it misses."""
    i = int(np.argmax(det.score))
    x0, y0, x1, y1 = (float(v) for v in det.xyxy[i])
    c = int(det.cls[i])
    best = f"{c} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
    return f"{best}\n{1 - c} 0.03 0.03 0.04 0.04\n" if corner else f"{best}\n"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate_detect")
    ul = root / "ultralytics"
    ultra.setup(ul)  # before ultralytics is imported: offline, settings in the test's folder
    import torch
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel

    torch.manual_seed(0)
    model = YOLO("yolo11n.yaml", task="detect")
    model.model = DetectionModel("yolo11n.yaml", nc=2, verbose=False)
    model.model.names = dict(enumerate(CLASSES))
    model.save(root / "w.pt")
    det = Detector(
        ultra.load(root / "w.pt", "detect"), "detect", {**PREDICT, "imgsz": 64, "conf": ev.MAP_CONF}
    )
    rng = np.random.default_rng(0)
    src, best = root / "src", []
    for split, n in (("train", 1), ("val", 2), ("test", 3)):
        (src / "images" / split).mkdir(parents=True)
        (src / "labels" / split).mkdir(parents=True)
        arrays = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(n)]
        for i, (a, d) in enumerate(zip(arrays, det.predict(arrays), strict=True)):
            Image.fromarray(a).save(src / "images" / split / f"{i}.png")
            (src / "labels" / split / f"{i}.txt").write_text(_label_rows(d, 64, 48, split != "val"))
            best += [float(d.score.max())] if split == "test" else []
    splits = {s: f"images/{s}" for s in ("train", "val", "test")}
    (src / "data.yaml").write_text(yaml.safe_dump({"names": CLASSES, **splits}))
    formats.materialise(formats.read_yolo(src / "data.yaml", "detect"), root / "data", "detect")
    card = {"id": "c" * 64, "task": "detect", "classes": CLASSES}
    (root / "card.json").write_text(json.dumps(card))
    spec = {
        "imgsz": 64,
        "predict": {**PREDICT, "conf": min(best)},  # an untrained model's scores are small
        "evaluate": {"split": "auto", "tiled": False},
        "intervals": {"resamples": 30, "seed": 2},
    }
    out = {k: root / f"{k}.out" for k in ("coco", "metrics", "per_class", "summary")}
    logged, mlflow_cfg = [], {"experiment": "aquaflow", "results": str(root)}
    lines, level = BufferingHandler(1000), ev.log.level
    ev.log.addHandler(lines)
    ev.log.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as mp:  # what reaches the tracker (see test_training_runs)
            mp.setattr(ev.tracking, "log_evaluation", lambda *args, **kw: logged.append((args, kw)))
            metrics = ev.run(
                data_dir=root / "data",
                weights=root / "w.pt",
                card_path=root / "card.json",
                spec=spec,
                out=out,
                work=root / "work",
                ultralytics_dir=ul,
                mlflow_cfg=mlflow_cfg,
            )
    finally:
        ev.log.removeHandler(lines)
        ev.log.setLevel(level)
    return {"root": root, "metrics": metrics, "out": out, "det": det, "spec": spec, "card": card} | {
        "logged": logged,
        "mlflow_cfg": mlflow_cfg,
        "log": [r.getMessage() for r in lines.buffer],
    }


def _scores_the_test_split_with_the_library_parts(evaluated):
    m, out, root = evaluated["metrics"], evaluated["out"], evaluated["root"]
    assert (m["task"], m["split"], m["images"], m["model_id"]) == ("detect", "test", 3, "c" * 64)
    assert json.loads(out["metrics"].read_text()) == json.loads(json.dumps(m))
    ds = formats.read_yolo(root / "data/data.yaml", "detect")
    test = ds.splits["test"]
    found = ev.predict_split(evaluated["det"], test.images, 2, None)
    assert len(found) == 3 and all(len(d) for d in found)
    results = json.loads(out["coco"].read_text())
    assert results == json.loads(
        json.dumps(outputs.coco_results(ev.detections_table(found, "detect", CLASSES), "detect"))
    )
    gt = root / "data/coco_test.json"
    assert m["coco_bbox"] == ev.coco_eval(gt, results, "bbox", CLASSES) and "coco_segm" not in m
    assert 0 < m["coco_bbox"]["mAP50"] < 1  # the model's own box is found, the corner one is not
    at = ev.threshold_metrics("detect", found, test.labels, evaluated["spec"]["predict"]["conf"], CLASSES)
    assert m["at_threshold"] == at and at["all"]["tp"] == 3 and at["all"]["fn"] == 3
    assert at["mean_matched_iou"] == pytest.approx(1.0, abs=1e-4)
    assert m["record"] == {
        "source": "pycocotools bbox",
        "mAP50": m["coco_bbox"]["mAP50"],
        "mAP50_95": m["coco_bbox"]["mAP50_95"],
    }
    assert evaluated["log"] == [f"evaluation: {m['record']}"]


def _reports_ultralytics_val_of_the_same_split(evaluated):
    root, m = evaluated["root"], evaluated["metrics"]
    model = ultra.load(root / "w.pt", "detect")
    val = model.val(
        data=str(root / "data/data.yaml"), split="test", imgsz=64, batch=2, conf=ev.MAP_CONF, iou=0.6,
        device="cpu", plots=False, verbose=False, project=str(root / "check"), name="val",
    )  # fmt: skip
    u = m["ultralytics"]
    assert u["box"] == pytest.approx(
        {"mAP50": val.box.map50, "mAP50_95": val.box.map, "precision": val.box.mp, "recall": val.box.mr}
    )
    assert u["per_class_AP50_95"] == pytest.approx(
        {CLASSES[int(c)]: val.box.maps[int(c)] for c in val.box.ap_class_index}
    )
    assert set(u) == {"box", "per_class_AP50_95"} and (root / "work/val").is_dir()
    assert not list((root / "work/val").rglob("*.png"))  # no plots


def _writes_intervals_summary_and_per_class_tables(evaluated):
    m, out = evaluated["metrics"], evaluated["out"]
    iv = m["intervals"]
    assert iv["method"] == "percentile bootstrap over test images, each with all its objects"
    assert (iv["resamples"], iv["level"], iv["seed"]) == (30, 0.95, 2)
    figures = {"mAP50", "mAP50_95", "precision", "recall", "f1", "mean_matched_iou"}
    assert set(iv) - {"method", "resamples", "level", "seed"} == figures | {
        f"{k}/{c}" for k in ("precision", "recall", "f1") for c in CLASSES
    }
    summary = pd.read_csv(out["summary"], sep="\t")
    head = ev.headline(m)
    assert summary["metric"].tolist() == ["mAP50", "mAP50-95", "precision", "recall", "mean matched IoU"]
    keys = ["mAP50", "mAP50_95", "precision", "recall", "mean_matched_iou"]
    assert summary["value"].tolist() == pytest.approx([head[k] for k in keys])
    assert summary["low"].tolist() == pytest.approx([iv[k][0] for k in keys])
    assert summary["high"].tolist() == pytest.approx([iv[k][1] for k in keys])
    assert (summary["source"] == "pycocotools bbox").all()
    per_class = pd.read_csv(out["per_class"], sep="\t")
    want = ev.per_class_table(m, CLASSES)
    assert per_class.columns.tolist() == want.columns.tolist()
    pd.testing.assert_frame_equal(per_class, want, check_dtype=False)
    assert per_class["precision_low"].notna().all()


def _logs_the_headline_and_its_intervals_to_the_training_run(evaluated):
    m, out = evaluated["metrics"], evaluated["out"]
    head, iv = ev.headline(m), m["intervals"]
    assert set(head) == {"mAP50", "mAP50_95", "precision", "recall", "f1", "mean_matched_iou"}
    want = {f"test_{k}": v for k, v in head.items()}
    want |= {f"test_{k}_{end}": iv[k][i] for k in head for i, end in enumerate(("low", "high"))}
    files = [out["metrics"], out["summary"], out["per_class"]]
    args = (evaluated["card"], want, "eval_test", evaluated["mlflow_cfg"])
    assert evaluated["logged"] == [(args, {"files": files})]


def test_run_scores_reports_and_writes_the_test_split(evaluated):
    """One test over the module's run (so a mutation tool that re-runs only the tests reaching a
    function still checks every output of it)."""
    _scores_the_test_split_with_the_library_parts(evaluated)
    _reports_ultralytics_val_of_the_same_split(evaluated)
    _writes_intervals_summary_and_per_class_tables(evaluated)
    _logs_the_headline_and_its_intervals_to_the_training_run(evaluated)


def test_split_auto_is_val_without_a_test_split_tiled_and_an_empty_prediction_table(tmp_path, evaluated):
    root = evaluated["root"]
    data = yaml.safe_load((root / "data/data.yaml").read_text())
    del data["test"]
    (tmp_path / "data").mkdir()
    for name in ("coco_val.json",):
        (tmp_path / "data" / name).write_text((root / "data" / name).read_text())
    (tmp_path / "data/data.yaml").write_text(yaml.safe_dump(data))
    out = {k: tmp_path / f"{k}.out" for k in ("coco", "metrics", "per_class", "summary")}
    tiling = TILING
    spec = {
        **evaluated["spec"],
        "predict": {**evaluated["spec"]["predict"], "conf": 0.99, "tiling": tiling},
        "evaluate": {"split": "auto", "tiled": True},
        "intervals": {"resamples": 0},
    }
    m = ev.run(
        data_dir=tmp_path / "data", weights=root / "w.pt", card_path=root / "card.json", spec=spec, out=out,
        work=root / "work", ultralytics_dir=root / "ultralytics",
    )  # fmt: skip
    assert [p.name for p in (root / "work").iterdir()] == ["val"]  # Ultralytics' val reuses its folder
    assert (m["split"], m["images"]) == ("val", 2)
    val = formats.read_yolo(tmp_path / "data/data.yaml", "detect").splits["val"].images
    found = ev.predict_split(evaluated["det"], val, 2, tiling)
    table = ev.detections_table(found, "detect", CLASSES)
    assert json.loads(out["coco"].read_text()) == json.loads(
        json.dumps(outputs.coco_results(table, "detect"))
    )
    whole = ev.predict_split(evaluated["det"], val, 2, None)  # tiles find other boxes than the image
    assert [len(d) for d in found] != [len(d) for d in whole]
    assert m["at_threshold"]["all"]["tp"] == 0 and m["at_threshold"]["conf"] == 0.99
    assert (
        set(m["intervals"]) == {"method", "resamples", "level", "seed"} and m["intervals"]["resamples"] == 0
    )
    assert ev.headline(m) == {
        "mAP50": m["coco_bbox"]["mAP50"], "mAP50_95": m["coco_bbox"]["mAP50_95"], "precision": 0.0,
        "recall": 0.0, "f1": 0.0, "mean_matched_iou": 0.0,
    }  # fmt: skip
    assert pd.read_csv(out["summary"], sep="\t")["low"].isna().all()
