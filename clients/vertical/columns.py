"""A warning about categorical party columns whose held-out users are mostly unseen in training.

Which columns become features, and as what (``drop-columns``, ``column-types``, the refusal of free text
and ID columns), is decided by the shared reader, :mod:`clients.tabular`. What is particular to a vertical
party is the split: a categorical column most of whose held-out values never occur in its training rows
— an identifier kept as a category with ``column-types`` — gives those users all zeros there, which
:func:`unseen_note` says (:class:`UnseenCategoryWarning`, recorded with the party's data).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from clients.tabular import DROP_COLUMNS_KEY

UNSEEN_RATIO, UNSEEN_MIN = 0.5, 5
"""Warn when more than this fraction (and at least this many) of a categorical column's filled held-out
values never occur in its training rows."""


class UnseenCategoryWarning(UserWarning):
    """Most held-out values of a categorical column never occur in its training rows."""


def unseen_note(path: Path, name: str, categories: Iterable[str], held_out: Sequence[str]) -> str | None:
    """A warning if most filled ``held_out`` values of categorical column ``name`` are not ``categories``."""
    known = set(categories)
    unseen = sum(v not in known for v in held_out)
    if unseen < UNSEEN_MIN or unseen <= UNSEEN_RATIO * len(held_out):
        return None
    return (f"party file {path}: column {name!r}: {unseen} of {len(held_out)} held-out values "
            f"({100 * unseen / len(held_out):.0f} %) never occur in the train rows, so those users get all "
            f"zeros there; if it identifies users rather than describing them, drop it "
            f"({DROP_COLUMNS_KEY}: \"{name}\")")
