"""Flower ``run_config`` ⇄ the typed (dataclass) configuration, through the one codec.

Hydra composes the nested, typed configuration; Flower's ``run_config`` holds only scalars under
dotted keys (``[tool.flwr.app.config]`` tables become ``a.b`` keys). Both directions go through
:mod:`protocol.codec`, the same codec the messages use, so one schema is the single source of truth.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from protocol.codec import Scalar, from_flat, to_flat

T = TypeVar("T")

__all__ = ["Scalar", "flatten", "unflatten"]


def flatten(config: Any) -> dict[str, Scalar]:
    """Dotted-key scalars of a (nested) dataclass instance, in field order."""
    return to_flat(config)


def unflatten(schema: type[T], flat: Mapping[str, Any]) -> T:
    """Build ``schema`` from dotted ``run_config`` keys; missing keys keep the schema's defaults.

    Raises
    ------
    ValueError
        If ``flat`` holds a key the schema does not know, or a value of the wrong type.
    """
    return from_flat(schema, flat, what="run_config")
