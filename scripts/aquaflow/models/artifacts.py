"""Models as artifacts: model cards validated on load, models trained elsewhere imported by hash.

A model is a folder holding `model_card.json` and the weights file the card names; its id is the
sha256 of the weights. Sources: a path on disk, a folder inside an installed package, or an MLflow
registry reference (`models:/<name>/<version>` or `models:/<name>@<alias>`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aquaflow.io import atomic_path, read_json, sha256_file, write_json

log = logging.getLogger(__name__)

CARD = "model_card.json"
DEFAULT_WEIGHTS = {"safetensors": "model.safetensors", "keras": "model.keras", "ultralytics": "model.pt"}


class ModelCardError(ValueError):
    """A model card is missing a key or holds a value the workflow cannot use; names the key."""


def _need(card: dict[str, Any], key: str, kind: type | tuple[type, ...], origin: str) -> Any:
    if key not in card:
        raise ModelCardError(f"{origin}: model card has no '{key}'")
    if not isinstance(card[key], kind) or isinstance(card[key], bool):
        raise ModelCardError(f"{origin}: model card key '{key}' must be {kind}, got {card[key]!r}")
    return card[key]


def validate_card(card: dict[str, Any], origin: str = "model card") -> dict[str, Any]:
    """Check what inference and export rely on: classes, input size, normalisation, architecture."""
    fmt = _need(card, "format", str, origin)
    card.setdefault("weights", DEFAULT_WEIGHTS.get(fmt, ""))
    card.setdefault("backend", {"safetensors": "torch", "keras": "keras"}.get(fmt, fmt))
    card.setdefault("task", "classify")
    _need(card, "arch", str, origin)
    classes = _need(card, "classes", list, origin)
    if not classes or not all(isinstance(c, str) and c for c in classes):
        raise ModelCardError(f"{origin}: model card key 'classes' must be a non-empty list of names")
    if len(set(classes)) != len(classes):
        raise ModelCardError(f"{origin}: model card key 'classes' repeats a name")
    size = _need(card, "input_size", int, origin)
    if size < 16:
        raise ModelCardError(f"{origin}: model card key 'input_size' must be >= 16, got {size}")
    norm = _need(card, "normalization", dict, origin)
    if card["backend"] == "torch":
        for key in ("mean", "std"):
            v = norm.get(key)
            if not (isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v)):
                raise ModelCardError(f"{origin}: model card key 'normalization.{key}' must be 3 numbers")
        if any(x <= 0 for x in norm["std"]):
            raise ModelCardError(f"{origin}: model card key 'normalization.std' must be positive")
        import timm

        if not timm.is_model(card["arch"]):
            raise ModelCardError(
                f"{origin}: model card key 'arch': {card['arch']!r} is not a timm architecture"
            )
    return card


def read_card(path: str | Path) -> dict[str, Any]:
    return validate_card(read_json(path), str(path))


def locate(folder_or_card: str | Path) -> tuple[Path, dict[str, Any]]:
    """(weights path, validated card) of a model folder or of a card file."""
    p = Path(folder_or_card)
    card_path = p / CARD if p.is_dir() else p
    if not card_path.is_file():
        raise FileNotFoundError(f"no model card at {card_path}")
    card = read_card(card_path)
    weights = card_path.parent / card["weights"]
    if not weights.is_file():
        raise FileNotFoundError(f"{card_path}: the weights file it names is missing: {weights}")
    return weights, card


def source_folder(spec: dict[str, Any], mlflow_cfg: dict[str, Any] | None, work: Path) -> Path:
    """The folder of a given model: a path, a folder in an installed package, or an MLflow download."""
    kind = spec["source"]
    if kind == "path":
        return Path(spec["path"])
    if kind == "package":
        from aquaflow.data.fetch import package_root

        return package_root(spec["package"]) / (spec.get("subdir") or "")
    if kind == "mlflow":
        from aquaflow.monitoring import tracking

        cfg = mlflow_cfg or {"tracking_uri": None, "results": "results"}
        uri = tracking.tracking_uri(cfg["tracking_uri"], cfg["results"])
        return tracking.download_registered_model(spec["uri"], work, uri)
    raise ValueError(f"model.source {kind!r} is not an imported model")


def import_model(
    spec: dict[str, Any],
    weights_out: str | Path,
    card_out: str | Path,
    mlflow_cfg: dict[str, Any] | None = None,
    describe: Callable[[Path, dict[str, Any] | None], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Copy a given model into the workflow: card validated, weights hash = card id (= the pin).

    `describe(weights, card)`: a backend's check of what was found against the weights themselves
    (e.g. the task inside an Ultralytics checkpoint), returning the card to import. With it, the
    source may also be a bare weights file (`card` None: the backend writes the card)."""
    with tempfile.TemporaryDirectory() as work:
        found = source_folder(spec, mlflow_cfg, Path(work))
        if describe is not None and found.is_file() and found.suffix != ".json":
            weights, card = found, None
        else:
            weights, card = locate(found)
        if describe is not None:
            card = validate_card(describe(weights, card), str(weights))
        digest = sha256_file(weights)
        if card.get("id") and card["id"] != digest:
            raise ModelCardError(f"{weights}: sha256 {digest} differs from the card's id {card['id']}")
        pin = (spec.get("sha256") or "").removeprefix("sha256:").lower()
        if pin and pin != digest:
            raise ModelCardError(f"{weights}: sha256 {digest} differs from model.sha256 {pin}")
        if Path(weights_out).suffix != weights.suffix:
            raise ModelCardError(
                f"{weights}: a {card['format']} model cannot be used as {Path(weights_out).name}"
            )
        with atomic_path(weights_out) as tmp:
            shutil.copyfile(weights, tmp)
        card = {**card, "id": digest, "weights": Path(weights_out).name}
        card["imported_from"] = {k: v for k, v in spec.items() if v not in (None, "")}
        write_json(card, card_out)
    log.info(
        "imported model %s (%s, %d classes) from %s", digest[:16], card["arch"], len(card["classes"]), spec
    )
    return card
