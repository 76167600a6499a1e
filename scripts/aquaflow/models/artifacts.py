"""Models as artifacts: model cards validated on load, models trained elsewhere imported by hash.

A model is a folder holding `model_card.json` and the weights file the card names; its id is the
sha256 of the weights. Sources: a path on disk, a folder inside an installed package, or an MLflow
registry reference (`models:/<name>/<version>` or `models:/<name>@<alias>`).
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from aquaflow.io import atomic_path, read_json, redacted, sha256_file, write_json

log = logging.getLogger(__name__)

CARD = "model_card.json"
DEFAULT_WEIGHTS = {"safetensors": "model.safetensors", "keras": "model.keras", "ultralytics": "model.pt"}


class ModelCardError(ValueError):
    """A model card is missing a key or holds a value the workflow cannot use; names the key."""


SCHEMA = Path(__file__).with_name("model_card.schema.json")


@functools.cache
def _validator() -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))


def validate_card(card: dict[str, Any], origin: str = "model card") -> dict[str, Any]:
    """Check a card against the one model-card schema (`model_card.schema.json`): classes, input
    size, normalisation, architecture, format...; defaults filled for cards written by hand."""
    fmt = card.get("format")
    card.setdefault("weights", DEFAULT_WEIGHTS.get(fmt, ""))
    card.setdefault("backend", {"safetensors": "torch", "keras": "keras"}.get(fmt, fmt))
    card.setdefault("task", "classify")
    errors = sorted(_validator().iter_errors(card), key=lambda e: (len(e.path), list(e.path)))
    if errors:
        err = errors[0]
        if err.validator == "required":
            missing = [k for k in err.validator_value if k not in err.instance]
            where = ".".join([*map(str, err.path), missing[0]]) if missing else ".".join(map(str, err.path))
            raise ModelCardError(f"{origin}: model card has no '{where}'")
        where = ".".join(map(str, err.path)) or "(top level)"
        raise ModelCardError(f"{origin}: model card key '{where}': {err.message}")
    if card["backend"] == "torch":
        import timm

        if not timm.is_model(card["arch"]):
            raise ModelCardError(
                f"{origin}: model card key 'arch': {card['arch']!r} is not a timm architecture"
            )
    return card


def write_card(card: dict[str, Any], path: str | Path) -> dict[str, Any]:
    """Validate a card (it must carry its id) and write it atomically; every trainer and importer
    writes cards through here. Remote URIs in it (tracking store, where the model or its
    pretrained weights came from) lose their credentials and query strings (redact_uri)."""
    validate_card(card, str(path))
    if "id" not in card:
        raise ModelCardError(f"{path}: model card has no 'id' (the weights' SHA-256)")
    write_json(redacted(card), path)
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
    folders: Sequence[str] = (),
) -> dict[str, Any]:
    """Copy a given model into the workflow: card validated, weights hash = card id (= the pin).

    `describe(weights, card)`: a backend's check of what was found against the weights themselves
    (e.g. the task inside an Ultralytics checkpoint), returning the card to import. With it, the
    source may also be a bare weights file (`card` None: the backend writes the card).
    `folders`: subfolders of the model folder the backend also needs (e.g. a CLAP audio tower),
    copied beside the imported weights."""
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
        for name in folders:
            if not (weights.parent / name).is_dir():
                raise ModelCardError(f"{weights.parent}: no {name}/ folder beside the weights")
            shutil.rmtree(Path(weights_out).parent / name, ignore_errors=True)
            shutil.copytree(weights.parent / name, Path(weights_out).parent / name)
        card = {**card, "id": digest, "weights": Path(weights_out).name}
        card["imported_from"] = {k: v for k, v in spec.items() if v not in (None, "")}
        write_card(card, card_out)
    log.info(
        "imported model %s (%s, %d classes) from %s", digest[:16], card["arch"], len(card["classes"]), spec
    )
    return card
