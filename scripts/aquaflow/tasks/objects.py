"""The rows every export writes, decided by the task: one object per classified item, per detection,
or (semantic) per raster and class present.

`settings` (the rules' `objects` params): {"task": "classify"} for a classifier, whose predictions
already are one object per row; for detect / segment / obb also `sample_column`, `default_sample` and
`pixel_size` (see aquaflow.tasks.detect.objects); for semantic `sample_column` and `default_sample`
(see aquaflow.tasks.semantic.objects).
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from aquaflow.tasks.detect import objects as detect_objects
from aquaflow.tasks.semantic import objects as semantic_objects

CLASSIFY = {"task": "classify"}


def is_detection(settings: dict[str, Any] | None) -> bool:
    return (settings or CLASSIFY)["task"] != "classify"


def object_kind(settings: dict[str, Any] | None) -> str:
    """classify, detect (detect / segment / obb) or semantic: how the Darwin Core writer words and
    measures the objects."""
    task = (settings or CLASSIFY)["task"]
    return task if task in ("classify", "semantic") else "detect"


def export_objects(predictions: pd.DataFrame, settings: dict[str, Any] | None) -> pd.DataFrame:
    """A campaign's predictions table -> the object table the EcoTaxa and Darwin Core writers read."""
    s = settings or CLASSIFY
    if not is_detection(s):
        return predictions
    if s["task"] == "semantic":
        return semantic_objects.objects(
            predictions, sample_column=s["sample_column"], default_sample=s["default_sample"]
        )
    return detect_objects.objects(
        predictions,
        s["task"],
        sample_column=s["sample_column"],
        default_sample=s["default_sample"],
        pixel_size=s.get("pixel_size"),
    )


def export_images(counts: pd.DataFrame, settings: dict[str, Any]) -> pd.DataFrame:
    """A detection campaign's counts table (a semantic campaign's predictions) -> every predicted
    image's sample and area (pixels)."""
    if settings["task"] == "semantic":
        return semantic_objects.images(
            counts, sample_column=settings["sample_column"], default_sample=settings["default_sample"]
        )
    return detect_objects.images(
        counts, sample_column=settings["sample_column"], default_sample=settings["default_sample"]
    )
