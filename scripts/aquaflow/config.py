"""Configuration loading: JSON-Schema validation that fills defaults and names the offending key."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml


class ConfigError(ValueError):
    """A configuration file is invalid; the message names the file, the key and what is allowed."""


def _extend_with_defaults(cls: type) -> type:
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(cls, {"properties": set_defaults})


_Validator = _extend_with_defaults(jsonschema.Draft202012Validator)
# libyaml's parser where PyYAML was built with it (its wheels are): the config schema is read by
# every Snakemake start, ~10x faster than the pure-Python SafeLoader; the same safe subset
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    with path.open() as fh:
        data = yaml.load(fh, Loader=_SAFE_LOADER)  # a safe loader
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _key_path(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def _describe(error: jsonschema.ValidationError) -> str:
    """One line naming the key, the problem and what is allowed."""
    key = _key_path(error)
    schema = error.schema if isinstance(error.schema, dict) else {}
    if error.validator == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        parent = key if key != "<top level>" else ""
        names = ", ".join(f"'{parent + '.' if parent else ''}{k}'" for k in extra)
        return f"unknown key {names}; allowed keys here: {', '.join(allowed)}"
    if error.validator == "enum":
        return f"key '{key}': {error.instance!r} is not one of {error.validator_value}"
    if error.validator == "type":
        return f"key '{key}': {error.instance!r} is not of type {error.validator_value!r}"
    if error.validator == "required":
        return f"key '{key}': {error.message}"
    return f"key '{key}': {error.message}"


def validate(data: dict[str, Any], schema_path: str | Path, origin: str) -> dict[str, Any]:
    """Validate `data` in place against the YAML schema, filling defaults; raise ConfigError."""
    schema = load_yaml(schema_path)
    validator = _Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: (len(e.absolute_path), e.path))
    if errors:
        # the most specific error first: deepest path, then schema order
        best = jsonschema.exceptions.best_match(errors)
        lines = [_describe(best), *[_describe(e) for e in errors if e is not best][:4]]
        raise ConfigError(f"{origin}: invalid config: " + "; ".join(lines))
    return data


def _input_specs(uc: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(key path, spec) of every inference input: `inference.inputs` and/or `campaigns.<c>.inputs`."""
    out = [(f"inference.inputs[{i}]", s) for i, s in enumerate(uc.get("inference", {}).get("inputs") or [])]
    for name, camp in (uc.get("campaigns") or {}).items():
        out += [(f"campaigns.{name}.inputs[{i}]", s) for i, s in enumerate(camp.get("inputs") or [])]
    return out


def known_classes(uc: dict[str, Any]) -> tuple[list[str], str] | None:
    """The class names, when they are known before any job runs, and the key they come from:
    `dataset.classes`, or `dataset.classes_file` in a local or packaged source. None otherwise
    (a URL/DOI source is only read by the fetch job; labels made by preprocess steps)."""
    dataset, source = uc.get("dataset") or {}, uc.get("source") or {}
    if dataset.get("classes"):
        return list(dataset["classes"]), "dataset.classes"
    if not dataset.get("classes_file"):
        return None
    root: Path | None = None
    if source.get("kind") == "path" and Path(source["path"]).is_dir():
        root = Path(source["path"])
    elif source.get("kind") == "package":
        from aquaflow.data.fetch import FetchError, package_root

        try:
            root = package_root(source["package"]) / source.get("subdir", "")
        except (FetchError, ImportError):
            return None
    file = root / dataset["classes_file"] if root else None
    if file is None or not file.is_file():
        return None
    names = [c.strip() for c in file.read_text().splitlines() if c.strip()]
    return names, f"dataset.classes_file ({file})"


def _semantic_problems(uc: dict[str, Any]) -> list[str]:
    """Task semantic: the classes other keys name exist, tiles are larger than their overlap."""
    sem = uc.get("semantic") or {}
    if uc.get("task") != "semantic" or not sem:
        return []
    names, out = sem.get("classes") or [], []
    train, predict = sem.get("train") or {}, sem.get("predict") or {}
    named = [("semantic.train.rare_class", [train["rare_class"]] if train.get("rare_class") else [])]
    named += [("semantic.background", sem.get("background") or [])]
    named += [("semantic.shoreline", [sem["shoreline"]] if sem.get("shoreline") else [])]
    named += [("semantic.evaluate.fss_classes", (sem.get("evaluate") or {}).get("fss_classes") or [])]
    for key, used in named:
        unknown = [c for c in used if c not in names]
        if unknown:
            out.append(f"'{key}' names {unknown}, not classes of 'semantic.classes': {names}")
    for key, section, tile, overlap in (
        ("train", train, "tile", "tile_overlap"),
        ("predict", predict, "tile", "overlap"),
    ):
        if section.get(overlap, 0) >= section.get(tile, 1):
            out.append(
                f"'semantic.{key}.{overlap}' ({section[overlap]}) must be smaller than "
                f"'semantic.{key}.{tile}' ({section[tile]})"
            )
    return out


def check_usecase(uc: dict[str, Any], origin: str) -> None:
    """Checks that involve two keys, run before any job; the message names both keys."""
    problems = []
    inference = uc.get("inference") or {}
    if inference.get("backend") == "onnx" and str(inference.get("device", "auto")).startswith("cuda"):
        problems.append(
            f"'inference.backend: onnx' runs on the CPU but 'inference.device' is "
            f"{inference['device']!r}: use backend eager or compile on a GPU, or device cpu"
        )
    model = uc.get("model") or {}
    if uc.get("task", "classify") == "classify" and model.get("backend") == "ultralytics":
        if inference.get("backend") in ("onnx", "compile"):
            problems.append(
                f"'inference.backend: {inference['backend']}' is for timm models but 'model.backend' is "
                "ultralytics: use auto or eager"
            )
        if model.get("source", "train") == "train" and not str(model.get("arch", "")).endswith(".yaml"):
            problems.append(
                f"'model.backend: ultralytics' trains a model built from its yaml but 'model.arch' is "
                f"{model.get('arch')!r}: use e.g. yolo11n-cls.yaml"
            )
    steps = (uc.get("preprocess") or {}).get("steps") or []
    if (uc.get("litter") or {}).get("enabled") and "patchify" not in steps:
        problems.append(
            "'litter.enabled: true' assesses tiles, but 'preprocess.steps' has no patchify "
            f"(steps: {steps}): add patchify or disable litter"
        )
    cut = (uc.get("preprocess") or {}).get("separate") or {}
    for switch, value, folder in (("method", "model", "model"), ("score", "model", "score_model")):
        if "separate" in steps and cut.get(switch) == value and not cut.get(folder):
            problems.append(
                f"'preprocess.separate.{switch}: {value}' needs a model folder, but "
                f"'preprocess.separate.{folder}' is not set"
            )
    for key, spec in _input_specs(uc):
        if spec.get("kind") == "preprocessed" and not steps:
            problems.append(
                f"'{key}.kind: preprocessed' reads the preprocess output, but 'preprocess.steps' is empty"
            )
    problems += _semantic_problems(uc)
    if uc.get("task") == "sound" and ((uc.get("export") or {}).get("dwca") or {}).get("enabled", True):
        for name, campaign in (uc.get("campaigns") or {}).items():
            if ((campaign or {}).get("samples") or {}).get("path"):
                problems.append(
                    f"'campaigns.{name}.samples.path' asks for a Darwin Core Archive, which is not built "
                    "for task sound (windows are not individuals): set 'export.dwca.enabled: false'"
                )
    classes = known_classes(uc)
    if classes is not None:
        names, where = classes
        ecotaxa = (uc.get("export") or {}).get("ecotaxa") or {}
        for key, used in (
            ("export.ecotaxa.class_scores", ecotaxa.get("class_scores") or []),
            ("export.ecotaxa.categories", list(ecotaxa.get("categories") or {})),
            ("litter.categories", (uc.get("litter") or {}).get("categories") or []),
        ):
            unknown = [c for c in used if c not in names]
            if unknown:
                problems.append(f"'{key}' names {unknown}, not classes of '{where}': {names}")
    if problems:
        raise ConfigError(f"{origin}: inconsistent config: " + "; ".join(problems))


def load_workflow_config(
    config: dict[str, Any], schema_dir: str | Path, origin: str = "config"
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Validate the main config and every use-case file it names; return (main, {uc: usecase})."""
    schema_dir = Path(schema_dir)
    main = validate(config, schema_dir / "config.schema.yaml", origin)
    usecases = {}
    for name, path in main["usecases"].items():
        uc = load_yaml(path)
        usecases[name] = validate(uc, schema_dir / "usecase.schema.yaml", f"{path}")
        check_usecase(usecases[name], f"{path}")
    return main, usecases
