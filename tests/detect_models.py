"""Detection models for the workflow tests, built without training.

`seeded_head_model`: a YOLO11n of a task from its yaml (random weights, seeded) whose head's last
layers are set by hand so that it finds small boxes of every class, with non-empty masks (segment),
saved as a given model folder (model.pt + model_card.json). Where the plumbing is under test
(exports, tiled campaigns), it stands in for a trained model at no training cost."""

from __future__ import annotations

from pathlib import Path

from aquaflow.io import write_json


def seeded_head_model(folder: Path, task: str, classes: list[str], imgsz: int = 64) -> Path:
    """folder/model.pt + folder/model_card.json of an untrained YOLO11n of `task` with a hand-set
    head (small boxes: one DFL bin, 2 strides wide; class logits and mask coefficients drawn from a
    seeded normal); returns the folder. Sets Ultralytics up offline in folder/../ultralytics."""
    import torch

    from aquaflow.backends.yolo import ultra

    ultra.setup(folder.parent / "ultralytics")
    from ultralytics import YOLO
    from ultralytics.nn.tasks import DetectionModel, OBBModel, SegmentationModel

    torch.manual_seed(0)
    arch = ultra.model_yaml("n", task)
    model = YOLO(arch, task=task)
    net = {"detect": DetectionModel, "segment": SegmentationModel, "obb": OBBModel}[task]
    model.model = net(arch, nc=len(classes), verbose=False).eval()
    head = model.model.model[-1]
    with torch.no_grad():
        for box, cls in zip(head.cv2, head.cv3, strict=True):
            box[-1].weight.zero_()
            box[-1].bias.zero_()
            box[-1].bias.view(4, -1)[:, 1] = 10.0
            cls[-1].weight.normal_(0, 0.5)
            cls[-1].bias.zero_()
        for coef in head.cv4 if task == "segment" else []:  # obb's cv4 is its angle branch
            coef[-1].weight.normal_(0, 2.0)
            coef[-1].bias.normal_(0, 20.0)
    model.model.names = dict(enumerate(classes))
    model.model.task = task
    folder.mkdir(parents=True)
    model.save(folder / "model.pt")
    card = {
        "format": "ultralytics",
        "task": task,
        "arch": arch,
        "classes": list(classes),
        "input_size": imgsz,
        "normalization": {"preprocess": "Ultralytics letterbox to input_size, RGB / 255"},
        "weights": "model.pt",
    }
    write_json(card, folder / "model_card.json")
    return folder
