"""The one codec: typed dataclass ⇄ dotted scalar keys ⇄ Flower ``ConfigRecord``.

Hydra composes nested, typed dataclasses; Flower's ``run_config`` and ``ConfigRecord`` hold only
scalars (``[tool.flwr.app.config]`` tables become dotted ``a.b`` keys). :func:`to_flat` and
:func:`from_flat` are the only bridge between the two, used by ``run_config`` decoding, by Hydra
entry points and by every message that carries a spec, so one schema is the single source of truth.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from flwr.app import ConfigRecord

T = TypeVar("T")
BARE_NAME_RULE = ("a bare file name (letters, digits, '_', '-', '.'; no path separator, no leading '.', "
                  "at most 128 characters)")
"""What a file name sent over the wire must be, so that the receiving node decides the folder."""
_BARE_NAME = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]{0,127}")


def is_bare_name(name: object) -> bool:
    """Whether ``name`` is a string that :data:`BARE_NAME_RULE` allows (never ``..`` nor a path)."""
    return isinstance(name, str) and _BARE_NAME.fullmatch(name) is not None

Scalar = bool | int | float | str


def to_flat(config: Any, prefix: str = "") -> dict[str, Scalar]:
    """Dotted-key scalars of a (nested) dataclass instance, in field order.

    A field that is ``None`` (allowed only where the schema says ``X | None``) is left out: Flower's
    records hold no null, and :func:`from_flat` gives a missing optional key its ``None`` back.

    Raises
    ------
    TypeError
        If a field holds something other than a scalar or a nested dataclass.
    """
    flat: dict[str, Scalar] = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(value):
            flat.update(to_flat(value, f"{key}."))
        elif value is None and optional_inner(typing.get_type_hints(type(config))[field.name]) is not None:
            continue
        elif isinstance(value, bool | int | float | str):
            flat[key] = value
        else:
            raise TypeError(f"config values must be scalars; {key} is {type(value).__name__}")
    return flat


def optional_inner(kind: Any) -> Any:
    """``X`` for a hint ``X | None`` (or ``Optional[X]``), else None."""
    args = typing.get_args(kind)
    if typing.get_origin(kind) in (typing.Union, types.UnionType) and type(None) in args and len(args) == 2:
        return next(a for a in args if a is not type(None))
    return None


def schema_keys(schema: type, prefix: str = "", *, required_only: bool = False) -> list[str]:
    """Every dotted scalar key of ``schema``, in field order (``required_only``: not the optional ones)."""
    hints = typing.get_type_hints(schema)
    out: list[str] = []
    for field in dataclasses.fields(schema):  # type: ignore[arg-type]
        kind, name = hints[field.name], f"{prefix}{field.name}"
        if dataclasses.is_dataclass(kind):
            out += schema_keys(kind, f"{name}.", required_only=required_only)
        elif not (required_only and optional_inner(kind) is not None):
            out.append(name)
    return out


def renamed_key(schema: type, key: str, value: object) -> str | None:
    """The one-line refusal of ``key`` if it is the earlier name of a setting of ``schema`` — listed in its
    class attribute ``renamed_keys`` as ``old: (new, what it is)`` — naming the new key and ``value``; None
    for any other key."""
    renamed: Mapping[str, tuple[str, str]] = getattr(schema, "renamed_keys", {})
    if key not in renamed:
        return None
    new, what = renamed[key]
    return f"{key} was renamed: set {new} ({what}); got {value}"


def from_flat(schema: type[T], flat: Mapping[str, Any], *, require_all: bool = False,
              what: str = "config") -> T:
    """Build ``schema`` from dotted keys; missing keys keep the schema's defaults unless ``require_all``.

    Raises
    ------
    ValueError
        If ``flat`` holds a key the schema does not know (an earlier name of a setting: :func:`renamed_key`),
        lacks one while ``require_all``, or holds a value of the wrong type (the message names the key and
        the value).
    """
    for key, value in flat.items():
        refusal = renamed_key(schema, key, value)
        if refusal is not None:
            raise ValueError(refusal)
    known = schema_keys(schema)
    unknown = sorted(set(flat) - set(known))
    if unknown:
        raise ValueError(f"unknown configuration keys {unknown} for {schema.__name__} ({what})")
    if require_all:
        missing = [k for k in schema_keys(schema, required_only=True) if k not in flat]
        if missing:
            raise ValueError(f"{schema.__name__} {what} lacks keys {missing}")
    return _build(schema, flat, "", what)


def _build(schema: type[T], flat: Mapping[str, Any], prefix: str, what: str) -> T:
    hints = typing.get_type_hints(schema)
    values: dict[str, Any] = {}
    for field in dataclasses.fields(schema):  # type: ignore[arg-type]
        key, kind = f"{prefix}{field.name}", hints[field.name]
        if dataclasses.is_dataclass(kind):
            values[field.name] = _build(kind, flat, f"{key}.", what)  # type: ignore[arg-type]
        elif key in flat:
            values[field.name] = _cast(key, flat[key], optional_inner(kind) or kind, what)
    return schema(**values)


def _cast(key: str, value: Any, kind: Any, what: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "false"):
            return str(value).lower() == "true"
        raise ValueError(f"{what} {key} must be a bool, got {value!r}")
    if kind in (int, float) and isinstance(value, bool):  # float(True) is 1.0: a slip, not a number
        raise ValueError(f"{what} {key} must be {kind.__name__}, got {value!r}")
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"{what} {key} must be int, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} {key} must be {kind.__name__}, got {value!r}") from None


def to_record(config: Any) -> ConfigRecord:
    """A dataclass instance as a Flower ``ConfigRecord`` of dotted scalar keys."""
    return ConfigRecord(to_flat(config))  # type: ignore[arg-type]


def from_record(schema: type[T], record: ConfigRecord | Mapping[str, Any]) -> T:
    """Decode a record written by :func:`to_record`; every key must be present.

    Raises
    ------
    ValueError
        If a key is missing, unknown or of the wrong type (a malformed message).
    """
    return from_flat(schema, dict(record.items()), require_all=True, what="record")
