"""A given Ultralytics model folder for tests, built without training: an untrained YOLO11n of a task
(from its yaml, random weights, seeded) saved as model.pt beside a model_card.json that
`aquaflow.models.artifacts` validates. With a low `conf` it yields detections on any image.
Call `aquaflow.backends.yolo.ultra.setup` first (Ultralytics reads its environment at import)."""

from __future__ import annotations

from pathlib import Path

from aquaflow.backends.yolo import ultra
from aquaflow.io import sha256_file, write_json


def write_model(folder: Path, task: str, classes: list[str], imgsz: int = 64, seed: int = 0) -> Path:
    """folder/model.pt + folder/model_card.json; returns the folder."""
    import torch
    from ultralytics import YOLO

    yaml_name = ultra.model_yaml("n", task)
    model = YOLO(yaml_name, task=task)
    torch.manual_seed(seed)
    net = type(model.model)(yaml_name, nc=len(classes), verbose=False)
    net.names = dict(enumerate(classes))
    net.task = task
    net.args = {"task": task, "imgsz": imgsz}
    model.model = net.eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save(str(folder / "model.pt"))
    card = {
        "id": sha256_file(folder / "model.pt"),
        "format": "ultralytics",
        "weights": "model.pt",
        "task": task,
        "backend": "ultralytics",
        "arch": yaml_name,
        "classes": list(classes),
        "input_size": imgsz,
        "normalization": {"preprocess": "Ultralytics letterbox to input_size, RGB / 255"},
    }
    write_json(card, folder / "model_card.json")
    return folder


def write_models(root: Path, classes_of: dict[str, list[str]]) -> Path:
    """root/<task>/ model folders (write_model) for every task of `classes_of`, built in a child
    process so that this process's environment (Ultralytics settings) stays untouched."""
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    root.mkdir(parents=True, exist_ok=True)
    code = (
        "from pathlib import Path; from aquaflow.backends.yolo import ultra; "
        f"ultra.setup({str(root / 'ultralytics')!r}); from tests.given_yolo import write_model; "
        + "; ".join(
            f"write_model(Path({str(root / t)!r}), {t!r}, {list(c)!r})" for t, c in classes_of.items()
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo / "scripts"), str(repo)])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=root, timeout=600)
    return root
