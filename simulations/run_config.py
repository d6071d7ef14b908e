"""Flatten a typed (dataclass) configuration into Flower ``run_config`` keys, and back.

Hydra composes the nested, typed configuration; Flower's ``run_config`` holds only scalars under
dotted keys (``[tool.flwr.app.config]`` tables become ``a.b`` keys). These two functions are the
only bridge between them, so one schema is the single source of truth for both.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

T = TypeVar("T")

Scalar = bool | int | float | str


def flatten(config: Any, prefix: str = "") -> dict[str, Scalar]:
    """Dotted-key scalars of a (nested) dataclass instance, in field order."""
    flat: dict[str, Scalar] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            flat.update(flatten(value, f"{key}."))
        elif isinstance(value, bool | int | float | str):
            flat[key] = value
        else:
            raise TypeError(f"run_config values must be scalars; {key} is {type(value).__name__}")
    return flat


def unflatten(schema: type[T], flat: Mapping[str, Any], prefix: str = "") -> T:
    """Build ``schema`` from dotted keys; missing keys keep the schema's defaults.

    Raises
    ------
    ValueError
        If ``flat`` holds a key the schema does not know, or a value of the wrong type.
    """
    hints = typing.get_type_hints(schema)
    if not prefix:
        _reject_unknown(schema, flat)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(schema):  # type: ignore[arg-type]
        key, kind = f"{prefix}{field.name}", hints[field.name]
        if dataclasses.is_dataclass(kind):
            values[field.name] = unflatten(kind, flat, f"{key}.")  # type: ignore[arg-type]
        elif key in flat:
            values[field.name] = _cast(key, flat[key], kind)
    return schema(**values)


def _cast(key: str, value: Any, kind: Any) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ValueError(f"run_config {key} must be a bool, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"run_config {key} must be {kind.__name__}, got {value!r}") from None


def _reject_unknown(schema: type, flat: Mapping[str, Any]) -> None:
    def keys(s: type, prefix: str) -> set[str]:
        hints = typing.get_type_hints(s)
        out: set[str] = set()
        for f in dataclasses.fields(s):  # type: ignore[arg-type]
            kind = hints[f.name]
            name = f"{prefix}{f.name}"
            out |= keys(kind, f"{name}.") if dataclasses.is_dataclass(kind) else {name}
        return out

    unknown = sorted(set(flat) - keys(schema, ""))
    if unknown:
        raise ValueError(f"unknown configuration keys {unknown} for {schema.__name__}")
