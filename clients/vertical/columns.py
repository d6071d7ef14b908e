"""Which columns of a party CSV become features, and as what: ``drop-columns``, ``column-types``, and the
checks that catch a column one-hot encoding would spoil (:mod:`clients.vertical.party_csv` reads them).

Per party, in ``node_config`` or the ``party{k}.json`` beside the CSV:

- ``drop-columns``: columns that are not features (``"Name,Ticket"``; a JSON list in the settings file);
- ``column-types``: ``categorical`` or ``numeric`` per column (``"Pclass=categorical;Fare=numeric"``; a
  JSON object in the settings file). A numeric-coded category (``Pclass`` 1/2/3) is read as a number
  unless declared ``categorical``; a declared ``numeric`` column refuses a cell that is not a number.

A column read as categorical (not declared) whose distinct training values approach its row count —
free text or an ID, such as a passenger's ``Name`` — is refused naming the column and both fixes: one-hot
encoding it gives one column per user that no held-out user matches. A categorical column most of whose
held-out values never occur in training gets a warning (:class:`UnseenCategoryWarning`) naming it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

DROP_COLUMNS_KEY, COLUMN_TYPES_KEY = "drop-columns", "column-types"
COLUMN_KEYS = (DROP_COLUMNS_KEY, COLUMN_TYPES_KEY)
"""Settings keys of this module (also accepted by :func:`clients.vertical.party_csv.csv_settings`)."""
CATEGORICAL, NUMERIC = "categorical", "numeric"
ID_LIKE_MIN_VALUES = 20
"""A column needs more distinct training values than this to be refused as free text or an ID ..."""
ID_LIKE_RATIO = 0.5
"""... and more than this fraction of its filled training rows."""
UNSEEN_RATIO, UNSEEN_MIN = 0.5, 5
"""Warn when more than this fraction (and at least this many) of a categorical column's filled held-out
values never occur in its training rows."""


class UnseenCategoryWarning(UserWarning):
    """Most held-out values of a categorical column never occur in its training rows."""


def setting_text(value: Any) -> str:
    """A setting as text: a JSON list as ``a,b``, a JSON object as ``a=x;b=y``, anything else ``str()``."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def dropped_columns(settings: Mapping[str, Any], header: Sequence[str], reserved: Iterable[str],
                    where: str) -> set[str]:
    """The columns ``drop-columns`` names.

    Raises
    ------
    ValueError
        If it names a column the file lacks, or the ID, ``split`` or label column (``reserved``).
    """
    names = [n.strip() for n in str(settings.get(DROP_COLUMNS_KEY, "")).split(",") if n.strip()]
    _known(names, header, DROP_COLUMNS_KEY, where)
    kept = sorted(set(names) & set(reserved))
    if kept:
        raise ValueError(f"{where}: {DROP_COLUMNS_KEY!r} cannot drop {kept}: the ID, split and label columns "
                         "are not features")
    return set(names)


def column_types(settings: Mapping[str, Any], header: Sequence[str], where: str) -> dict[str, str]:
    """Column → ``categorical`` / ``numeric`` as ``column-types`` declares.

    Raises
    ------
    ValueError
        If it does not read ``column=categorical;other=numeric`` or names a column the file lacks.
    """
    text = str(settings.get(COLUMN_TYPES_KEY, "")).strip()
    types: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, kind = (t.strip() for t in part.partition("="))
        if not name or kind not in (CATEGORICAL, NUMERIC) or name in types:
            raise ValueError(f"{where}: {COLUMN_TYPES_KEY!r} must read 'column=categorical;other=numeric' "
                             f"(each column once), got {text!r}")
        types[name] = kind
    _known(list(types), header, COLUMN_TYPES_KEY, where)
    return types


def _known(names: Sequence[str], header: Sequence[str], key: str, where: str) -> None:
    unknown = [n for n in names if n not in header]
    if unknown:
        raise ValueError(f"{where}: {key!r} names {unknown}, not columns of the file "
                         f"(columns: {list(header)})")


def check_not_id_like(path: Path, name: str, distinct: int, filled: int) -> None:
    """Refuse a column read as categorical whose distinct training values approach its filled rows.

    Raises
    ------
    ValueError
        Naming the file, the column, its counts, and how to drop it or keep it (declared categorical).
    """
    if distinct <= max(ID_LIKE_MIN_VALUES, ID_LIKE_RATIO * filled):
        return
    side = path.with_suffix(".json").name
    raise ValueError(
        f"party file {path}: column {name!r} looks like free text or an ID ({distinct} distinct values in "
        f"{filled} filled train rows): one-hot encoded it would become {distinct} columns that held-out "
        f"users mostly miss. Drop it ({DROP_COLUMNS_KEY}: \"{name}\" in {side} or node_config) or keep it "
        f"as a category anyway ({COLUMN_TYPES_KEY}: \"{name}={CATEGORICAL}\")")


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
