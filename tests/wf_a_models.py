"""A small Ultralytics classifier trained once per pytest run and shared by the unit and workflow
tests of the Ultralytics classification backend (tests/unit/test_yolo_classify.py,
tests/workflow/test_yolo_classify.py), with the helpers that compare against Ultralytics' own
predict. Import the fixture into a test module to use it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aquaflow.backends.yolo import checkpoint

from .conftest import built_once

IMGSZ = 32


def train_tiny_cls(images: Path, work: Path, epochs: int = 3) -> Path:
    """A yolo11n-cls model trained by Ultralytics itself (no aquaflow code) on the planktonclas
    FlowCam crops at 32 px: one image in four to val. Returns best.pt."""
    checkpoint.offline(work / "ultralytics")
    from ultralytics import YOLO

    data = work / "data"
    for cls in sorted(p.name for p in images.iterdir() if p.is_dir()):
        for i, f in enumerate(sorted((images / cls).glob("*.jpg"))):
            dst = data / ("val" if i % 4 == 0 else "train") / cls / f.name
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(f, dst)
    model = YOLO("yolo11n-cls.yaml", task="classify")
    model.train(
        data=str(data),
        epochs=epochs,
        imgsz=IMGSZ,
        batch=16,
        nbs=16,
        lr0=0.01,
        warmup_epochs=0,
        device="cpu",
        amp=False,
        pretrained=False,
        workers=0,
        plots=False,
        seed=0,
        project=str(work / "runs"),
        name="run",
        exist_ok=True,
        verbose=False,
    )
    return Path(model.trainer.save_dir) / "weights" / "best.pt"


@pytest.fixture(scope="session")
def tiny_cls_pt(tmp_path_factory, planktonclas_resources) -> Path:
    """best.pt of `train_tiny_cls` (3 epochs at 32 px on the FlowCam demo crops), trained once per
    pytest run and shared by the xdist workers: read it, never write next to it."""
    checkpoint.offline(tmp_path_factory.mktemp("ultralytics_settings"))  # whoever builds it
    folder = built_once(
        tmp_path_factory,
        "tiny_cls_pt",
        lambda work: train_tiny_cls(planktonclas_resources / "demo-images", work),
    )
    best = folder / "runs" / "run" / "weights" / "best.pt"
    assert best.is_file(), best
    return best


def odd_images(src: list[Path], out: Path) -> list[Path]:
    """Images of other shapes than the crops: very wide, very tall, smaller than the model's input,
    exactly its size, grey PNG."""
    out.mkdir(parents=True, exist_ok=True)
    base = np.asarray(Image.open(src[0]).convert("RGB"))
    shapes = {
        "wide": (20, 200),
        "tall": (180, 25),
        "small": (12, 17),
        "exact": (IMGSZ, IMGSZ),
        "odd": (33, 47),
    }
    paths = []
    for name, (h, w) in shapes.items():
        p = out / f"{name}.png"
        Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC).save(p)
        paths.append(p)
    grey = out / "grey.png"
    Image.open(src[1]).convert("L").save(grey)
    return [*paths, grey]


def ultralytics_probs(weights: Path, paths: list[Path]) -> np.ndarray:
    """Ultralytics' own predict, one image path at a time, at the model's image size."""
    from ultralytics import YOLO

    model = YOLO(str(weights))
    return np.stack(
        [
            model.predict(source=str(p), imgsz=IMGSZ, device="cpu", verbose=False)[0].probs.data.numpy()
            for p in paths
        ]
    )
