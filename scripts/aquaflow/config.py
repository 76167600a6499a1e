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


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    with path.open() as fh:
        data = yaml.safe_load(fh)
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
    return main, usecases
