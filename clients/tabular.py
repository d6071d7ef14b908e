"""The one reader of tabular site files: a CSV as a pandas table, its settings, and each column's kind.

PATE site files (:mod:`clients.pate.site_csv`) and vertical party files (:mod:`clients.vertical.party_csv`)
are both read here; the feature transform fitted on the columns is :mod:`clients.tabular_transform`.

A CSV has a header row and one row per sample. Cells are stripped text; a blank line is skipped but
still counted, so every error names the file's own line (1 = the header). The lines are split by the
standard library's ``csv`` tokenizer, which reports each row's cell count and line; pandas' own parser
pads a short row with empty cells and renumbers around blank lines, and both would hide the bad row.
Everything after the split — the column table, missing cells, numbers, distinct values — is pandas.

Settings (``node_config`` keys, or a party's ``<name>.json``): ``drop-columns`` (columns that are not
features), ``column-types`` (``"Pclass=categorical;Fare=numeric"``), ``categories``
(``"colour=red|green;size=S|M|L"``: a categorical column's categories in one-hot order) and ``classes``
(``"no,yes"``: the run's class names in label order); both readers take them from :func:`read_settings`.

A column not declared is typed from its cells (:func:`column_kind`): numeric when every filled cell is a
number, categorical when most are text; a column whose cells are mostly numbers but not all is refused
naming the first cell that is not (declare it categorical to keep it). A number must be finite as
float32, the dtype the models use (``1e39`` or ``inf`` is refused naming the cell). A column that looks
like an identifier is refused, never made a feature (:func:`check_not_id_like`): free text or IDs with
nearly one distinct value per row, or integers that are all distinct and run in file order (a row
counter); drop it, name it as the ID column, or declare its type to keep it.

pandas is imported inside the functions that read or inspect a table, not at the top: every message of a
deployment starts a new process, and one that reads no table should not pay for pandas.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pandas is imported where a table is read or inspected: see the module docstring
    import pandas as pd

ID_COLUMN_KEY, LABEL_COLUMN_KEY = "id-column", "label-column"
CLASSES_KEY, CATEGORIES_KEY = "classes", "categories"
DROP_COLUMNS_KEY, COLUMN_TYPES_KEY = "drop-columns", "column-types"
COLUMN_KEYS = (DROP_COLUMNS_KEY, COLUMN_TYPES_KEY)
"""Settings keys that choose the feature columns and their kinds (both readers accept them)."""
CATEGORICAL, NUMERIC = "categorical", "numeric"
ID_LIKE_MIN_VALUES = 20
"""A column needs more distinct values than this to be refused as free text or an ID ..."""
ID_LIKE_RATIO = 0.5
"""... and, as text, more than this fraction of its filled rows."""
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclass(frozen=True)
class Table:
    """A CSV's header and non-blank rows (a pandas frame of stripped text cells), with each row's line."""

    path: Path
    what: str  # "site file" or "party file": how errors name the file
    frame: pd.DataFrame
    lines: tuple[int, ...]  # of each row in the file (1 = the header)

    @property
    def header(self) -> tuple[str, ...]:
        return tuple(self.frame.columns)

    def where(self, row: int | None = None) -> str:
        """``site file PATH`` or ``site file PATH, row LINE`` of row index ``row``: how errors begin."""
        return f"{self.what} {self.path}" + ("" if row is None else f", row {self.lines[row]}")

    def index(self, name: str) -> int:
        """The position of column ``name``.

        Raises
        ------
        ValueError
            If the file has no such column (naming the file and its columns).
        """
        if name not in self.frame.columns:
            raise ValueError(f"{self.where()}: no column {name!r} (columns: {list(self.header)})")
        return self.header.index(name)

    def column(self, name: str, rows: Sequence[int] | None = None) -> list[str]:
        """The cells of column ``name`` (rows ``rows``, default all)."""
        series = self.frame.iloc[:, self.index(name)]
        return (series if rows is None else series.iloc[list(rows)]).tolist()


def read_table(path: Path, what: str, *, unit: str = "rows") -> Table:
    """The CSV at ``path``, read as UTF-8; empty cells are kept (the readers decide what they mean).

    Raises
    ------
    ValueError
        If the file is not UTF-8 text, is empty, its header has empty or repeated names, it has no rows
        (``has a header but no {unit}``), or a row has another number of cells than the header.
    """
    import pandas as pd  # deferred, like every heavy import here (module docstring)
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            numbered = [(reader.line_num, [c.strip() for c in row]) for row in reader
                        if any(c.strip() for c in row)]
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {path} is not UTF-8 CSV text ({err.reason} at byte {err.start}); save it "
                         "as UTF-8 (an .npz file must end in .npz)") from None
    except csv.Error as err:
        raise ValueError(f"{what} {path} is not CSV text ({err})") from None
    if not numbered:
        raise ValueError(f"{what} {path} is empty (no header row)")
    header = numbered[0][1]
    if "" in header or len(set(header)) != len(header):
        raise ValueError(f"{what} {path}: header has empty or repeated column names: {header}")
    if len(numbered) == 1:
        raise ValueError(f"{what} {path} has a header but no {unit}")
    for line, row in numbered[1:]:
        if len(row) != len(header):
            raise ValueError(f"{what} {path}, row {line}: {len(row)} cells, the header has {len(header)}")
    frame = pd.DataFrame([row for _, row in numbered[1:]], columns=header, dtype=str)
    return Table(path, what, frame, tuple(line for line, _ in numbered[1:]))


# -- settings ------------------------------------------------------------------------------------------


def setting_text(value: Any) -> str:
    """A setting as text: a JSON list as ``a,b``, a JSON object as ``a=x;b=y``, anything else ``str()``."""
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    if isinstance(value, dict):
        return ";".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def declared_classes(settings: Mapping[str, Any], where: str) -> tuple[str, ...]:
    """The ``classes`` setting as names in label order, or ``()`` when it is not set (``where`` begins the
    error message).

    Raises
    ------
    ValueError
        If it does not name at least two distinct classes.
    """
    if CLASSES_KEY not in settings:
        return ()
    names = tuple(c.strip() for c in str(settings[CLASSES_KEY]).split(","))
    if len(names) < 2 or "" in names or len(set(names)) != len(names):
        raise ValueError(f"{where}{CLASSES_KEY!r} must name >= 2 distinct classes, got "
                         f"{settings[CLASSES_KEY]!r}")
    return names


def sorted_classes(values: Iterable[str]) -> list[str]:
    """Distinct label values sorted: as integers when all are, else as text."""
    labels = sorted(set(values))
    return sorted(labels, key=int) if all(is_int(v) for v in labels) else labels


def declared_categories(settings: Mapping[str, Any], where: str) -> dict[str, tuple[str, ...]]:
    """Column → categories in one-hot order, as ``categories`` declares (``where`` begins the error message).

    Raises
    ------
    ValueError
        If it does not read ``column=a|b|c;other=x|y`` with distinct categories.
    """
    text = str(settings.get(CATEGORIES_KEY, "")).strip()
    declared: dict[str, tuple[str, ...]] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, values = part.partition("=")
        cats = tuple(v.strip() for v in values.split("|"))
        if not name.strip() or "" in cats or len(set(cats)) != len(cats):
            raise ValueError(f"{where}{CATEGORIES_KEY!r} must read 'column=a|b|c;other=x|y' with distinct "
                             f"categories, got {text!r}")
        declared[name.strip()] = cats
    return declared


def dropped_columns(settings: Mapping[str, Any], header: Sequence[str], reserved: Iterable[str],
                    where: str) -> set[str]:
    """The columns ``drop-columns`` names.

    Raises
    ------
    ValueError
        If it names a column the file lacks, or the ID, ``split`` or label column (``reserved``).
    """
    names = [n.strip() for n in setting_text(settings.get(DROP_COLUMNS_KEY, "")).split(",") if n.strip()]
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
    text = setting_text(settings.get(COLUMN_TYPES_KEY, "")).strip()
    types: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, kind = (t.strip() for t in part.partition("="))
        if not name or kind not in (CATEGORICAL, NUMERIC) or name in types:
            raise ValueError(f"{where}: {COLUMN_TYPES_KEY!r} must read 'column=categorical;other=numeric' "
                             f"(each column once), got {text!r}")
        types[name] = kind
    _known(list(types), header, COLUMN_TYPES_KEY, where)
    return types


@dataclass(frozen=True)
class ColumnSettings:
    """A file's reading settings, checked against its header (:func:`read_settings`).

    ``classes``: the run's class names in label order, ``()`` when not declared; ``dropped``: the columns
    that are not features; ``categories``: column → categories in one-hot order; ``types``: column →
    ``categorical`` / ``numeric`` as declared.
    """

    classes: tuple[str, ...]
    dropped: frozenset[str]
    categories: Mapping[str, tuple[str, ...]]
    types: Mapping[str, str]


def read_settings(settings: Mapping[str, Any], header: Sequence[str], reserved: Iterable[str], where: str, *,
                  classes_where: str, categories_where: str, clash_note: str = "") -> ColumnSettings:
    """The ``classes``, ``drop-columns``, ``categories`` and ``column-types`` settings of the file whose
    header is ``header`` (:func:`declared_classes`, :func:`dropped_columns`, :func:`declared_categories`,
    :func:`column_types`; ``reserved``: the ID, ``split`` and label columns).

    ``where`` (``site file PATH``) begins the errors about the file's columns, ``classes_where`` and
    ``categories_where`` those about the two settings' text; ``clash_note`` ends the error about a
    column with categories declared numeric.

    Raises
    ------
    ValueError
        As the four readers, or if a column with categories is declared numeric.
    """
    classes = declared_classes(settings, classes_where)
    dropped = dropped_columns(settings, header, reserved, where)
    categories = declared_categories(settings, categories_where)
    types = column_types(settings, header, where)
    clash = sorted(c for c in categories if types.get(c) == NUMERIC)
    if clash:
        raise ValueError(f"{where}: columns {clash} have categories but are declared numeric{clash_note}")
    return ColumnSettings(classes, frozenset(dropped), MappingProxyType(categories), MappingProxyType(types))


def _known(names: Sequence[str], header: Sequence[str], key: str, where: str) -> None:
    unknown = [n for n in names if n not in header]
    if unknown:
        raise ValueError(f"{where}: {key!r} names {unknown}, not columns of the file "
                         f"(columns: {list(header)})")


# -- numbers and column kinds --------------------------------------------------------------------------


def is_number(text: str) -> bool:
    """Whether ``text`` parses as a number (``nan`` and ``inf`` do; whether they are allowed is checked
    by :func:`numbers`)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


def is_int(text: str) -> bool:
    """Whether ``text`` parses as an integer."""
    try:
        int(text)
    except ValueError:
        return False
    return True


def numbers(table: Table, name: str, rows: Sequence[int], missing: Iterable[str] = ()) -> np.ndarray:
    """Column ``name``'s cells of ``rows`` as float64, NaN where the cell is in ``missing``.

    Raises
    ------
    ValueError
        Naming the file, row, column and cell, at the first cell that is not a number or not finite as
        float32 (NaN, inf, or beyond ±3.4e38).
    """
    import pandas as pd
    cells = pd.Series(table.column(name, rows), dtype=object)
    absent = cells.isin(frozenset(missing)).to_numpy()
    values = np.array([np.nan if a else _float_or_nan(c) for a, c in zip(absent, cells, strict=True)])
    bad = np.flatnonzero(~absent & ~(np.abs(values) <= FLOAT32_MAX))
    if len(bad):
        text = cells.iloc[bad[0]]
        reason = ("beyond float32's range (±3.4e38), the models' dtype" if is_number(text) and
                  np.isfinite(float(text)) else "not a finite number")
        raise ValueError(f"{table.where(rows[bad[0]])}: column {name!r} is {text!r}, {reason}")
    return values


def _float_or_nan(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def column_kind(table: Table, name: str, rows: Sequence[int], missing: Iterable[str] = ()) -> str:
    """``numeric`` or ``categorical``, typed from the filled cells of ``rows`` of an undeclared column.

    Numeric when every filled cell is a number; categorical when at most half are.

    Raises
    ------
    ValueError
        If more than half the filled cells are numbers but one is not: naming that cell, and how to keep
        the column as categories (``column-types``).
    """
    import pandas as pd
    cells = pd.Series(table.column(name, rows), dtype=object)
    filled = ~cells.isin(frozenset(missing))
    numeric = cells.map(is_number) & filled
    if numeric.sum() == filled.sum():
        return NUMERIC
    if numeric.sum() <= filled.sum() / 2:
        return CATEGORICAL
    first = int(np.flatnonzero((filled & ~numeric).to_numpy())[0])
    raise ValueError(f"{table.where(rows[first])}: column {name!r} is {cells.iloc[first]!r}, not a number, "
                     f"while {int(numeric.sum())} of its {int(filled.sum())} filled cells are numbers; fix "
                     f"the cell, or read the column as categories ({COLUMN_TYPES_KEY}: "
                     f"\"{name}={CATEGORICAL}\")")


def check_not_id_like(table: Table, name: str, values: Sequence[str], kind: str, *,
                      train: str = "") -> None:
    """Refuse an undeclared feature column that identifies rows rather than describing them.

    Text (``categorical``): more distinct values than both ``ID_LIKE_MIN_VALUES`` and ``ID_LIKE_RATIO``
    of the filled cells (one-hot, it would be one column per row that no other row matches). Numbers:
    more than ``ID_LIKE_MIN_VALUES`` distinct integers, one per row, in increasing or decreasing file
    order (a row counter such as ``PassengerId``). ``values`` are the column's filled cells.

    Raises
    ------
    ValueError
        Naming the file, the column, its counts, and how to drop it or keep it (declared).
    """
    import pandas as pd
    distinct = pd.Series(values, dtype=object).nunique()
    if kind == CATEGORICAL:
        if distinct <= max(ID_LIKE_MIN_VALUES, ID_LIKE_RATIO * len(values)):
            return
        what = "free text or an ID"
        keep = f"as a category anyway ({COLUMN_TYPES_KEY}: \"{name}={CATEGORICAL}\")"
        effect = (f": one-hot encoded it would become {distinct} columns that held-out users mostly miss"
                  if train else f": one-hot encoded it would become {distinct} columns, one per row")
    else:
        if distinct != len(values) or distinct <= ID_LIKE_MIN_VALUES or not all(is_int(v) for v in values):
            return
        steps = np.diff(np.array([int(v) for v in values], dtype=np.float64))
        if not ((steps > 0).all() or (steps < 0).all()):
            return
        what = "a row ID, distinct integers in file order"
        keep = f"as a number ({COLUMN_TYPES_KEY}: \"{name}={NUMERIC}\")"
        effect = ""
    side = table.path.with_suffix(".json").name
    raise ValueError(
        f"{table.where()}: column {name!r} looks like {what} ({distinct} distinct values in {len(values)} "
        f"filled{train} rows){effect}. Drop it ({DROP_COLUMNS_KEY}: \"{name}\" in {side} or node_config), "
        f"name it as the {ID_COLUMN_KEY!r}, or keep it {keep}")
