"""The feature transform of a tabular file: scikit-learn's transformers, saved as fitted numbers in JSON.

Per feature column, in header order:

- numeric: missing cells filled with the training median (``SimpleImputer``), then standardised by the
  training mean and standard deviation of the filled column (``StandardScaler``; a constant column keeps
  scale 1); PATE sites use no statistic (median 0, mean 0, scale 1: the numbers as they are);
- categorical: one-hot over its categories (``OneHotEncoder``; a missing or unseen value is all zeros);
- either kind: a 0/1 missing-value indicator (``MissingIndicator``) follows when the training rows had a
  missing cell (``flag``).

The three run side by side in one ``ColumnTransformer`` (:meth:`FeatureTransform.pipeline`). What is
saved is only its fitted numbers, as JSON — ``{"columns": [{"name", "categories" (null: numeric),
"flag", "median", "mean", "std"}, ...]}`` — so loading a transform never unpickles bytes. The features
of the training rows and of new rows both come from the ``ColumnTransformer`` rebuilt from these
numbers, so a saved transform gives exactly the features the run trained on.

pandas and scikit-learn are imported by the functions that use them: a node that reads an ``.npz`` file
(or answers a message that reads no table) does not pay their ≈ 1.5 s at every message of a deployment.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from clients.tabular import Table, numbers

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer


@dataclass(frozen=True)
class Column:
    """One feature column's fitted preparation."""

    name: str
    categories: tuple[str, ...] | None  # None: numeric
    flag: bool  # a missing-value indicator column follows
    median: float = 0.0
    mean: float = 0.0
    std: float = 1.0

    @property
    def width(self) -> int:
        return (1 if self.categories is None else len(self.categories)) + int(self.flag)


@dataclass(frozen=True)
class FeatureTransform:
    """The fitted preparation of a file's feature columns: fill, flag, standardise, one-hot."""

    columns: tuple[Column, ...]

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def pipeline(self) -> ColumnTransformer:
        """The scikit-learn ``ColumnTransformer`` with exactly these fitted numbers (see the module
        docstring); its output columns are grouped by kind, :meth:`apply` puts them in header order."""
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import MissingIndicator, SimpleImputer
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler
        numeric = [c for c in self.columns if c.categories is None]
        categorical = [c for c in self.columns if c.categories is not None]
        flagged = [c.name for c in self.columns if c.flag]
        parts = []
        if numeric:
            parts.append(("numeric", Pipeline([("fill", SimpleImputer(strategy="median")),
                                               ("scale", StandardScaler())]), [c.name for c in numeric]))
        if categorical:
            encoder = OneHotEncoder(categories=[list(c.categories or ()) for c in categorical],
                                    handle_unknown="ignore", sparse_output=False)
            parts.append(("categories", encoder, [c.name for c in categorical]))
        if flagged:
            parts.append(("missing", MissingIndicator(features="all"), flagged))
        # One row of the fitted numbers: the median of one value is that value, the categories are given.
        row = {c.name: [c.median] if c.categories is None else [c.categories[0]] for c in self.columns}
        transformer = ColumnTransformer(parts).fit(pd.DataFrame(row))
        if numeric:
            scaler = transformer.named_transformers_["numeric"].named_steps["scale"]
            scaler.mean_ = np.array([c.mean for c in numeric])
            scaler.scale_ = np.array([c.std for c in numeric])
            scaler.var_ = scaler.scale_ ** 2
        return transformer

    def apply(self, table: Table, rows: Sequence[int] | None = None,
              missing: Iterable[str] = ()) -> np.ndarray:
        """Features ``(len(rows), width)`` float32 of ``table``'s ``rows`` (default all); cells in
        ``missing`` are missing values.

        Raises
        ------
        ValueError
            If a column is absent, or a numeric cell is not a number finite in float32 (named with the file,
            row and cell).
        """
        import pandas as pd

        rows = list(range(len(table.frame))) if rows is None else list(rows)
        frame = pd.DataFrame({c.name: _cells(table, c, rows, frozenset(missing)) for c in self.columns})
        out = np.asarray(self.pipeline().transform(frame), dtype=np.float64)
        return np.ascontiguousarray(out[:, self._header_order()], dtype=np.float32)

    def _header_order(self) -> list[int]:
        """Positions in the ``ColumnTransformer``'s output (numeric, then one-hot, then indicator blocks)
        of each column's value(s) and flag, in header order."""
        numeric = [c for c in self.columns if c.categories is None]
        onehot = sum(len(c.categories or ()) for c in self.columns)
        start = {c.name: i for i, c in enumerate(numeric)}
        offset = len(numeric)
        for c in self.columns:
            if c.categories is not None:
                start[c.name] = offset
                offset += len(c.categories)
        flagged = [c.name for c in self.columns if c.flag]
        flags = {name: len(numeric) + onehot + i for i, name in enumerate(flagged)}
        order: list[int] = []
        for c in self.columns:
            order += range(start[c.name], start[c.name] + (1 if c.categories is None else len(c.categories)))
            order += [flags[c.name]] if c.flag else []
        return order

    def to_json(self) -> str:
        return json.dumps({"columns": [{"name": c.name, "categories": None if c.categories is None
                                        else list(c.categories), "flag": c.flag, "median": c.median,
                                        "mean": c.mean, "std": c.std} for c in self.columns]}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> FeatureTransform:
        """The transform saved as ``text`` (:meth:`to_json`).

        Raises
        ------
        ValueError
            If ``text`` is not JSON of that form, or a number in it is not finite or a scale is not > 0.
        """
        try:
            columns = tuple(Column(str(c["name"]), None if c["categories"] is None else
                                   tuple(str(v) for v in c["categories"]), _flag(c["flag"]),
                                   float(c["median"]), float(c["mean"]), float(c["std"]))
                            for c in json.loads(text)["columns"])
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(f"not a saved feature transform ({type(err).__name__}: {err}); expected "
                             '{"columns": [{"name", "categories", "flag", "median", "mean", "std"}, '
                             '...]}') from None
        bad = [c.name for c in columns if not (np.isfinite([c.median, c.mean, c.std]).all() and c.std > 0)
               or (c.categories is not None and not c.categories)]
        if not columns or bad:
            what = "no column" if not columns else f"columns {bad}"
            raise ValueError(f"not a usable feature transform: {what} (every number finite, every scale > 0, "
                             "every category list non-empty)")
        return cls(columns)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"flag must be true or false, got {value!r}")
    return value


def _cells(table: Table, column: Column, rows: Sequence[int], missing: frozenset[str]) -> np.ndarray:
    """A column's cells as the transformer takes them: float64 or text, NaN where missing."""
    if column.categories is None:
        return numbers(table, column.name, rows, missing)
    return np.array([np.nan if v in missing else v for v in table.column(column.name, rows)], dtype=object)


def fit_transform(table: Table, kinds: Mapping[str, tuple[str, ...] | None], train_rows: Sequence[int], *,
                  missing: Iterable[str] = (), standardise: bool = True) -> FeatureTransform:
    """Fit the transform of the feature columns ``kinds`` (name → categories, None for numeric; in header
    order) on ``train_rows`` only, with scikit-learn (``SimpleImputer``, ``StandardScaler``,
    ``MissingIndicator``). Without ``standardise`` numbers stay as they are (median 0, mean 0, scale 1).

    Raises
    ------
    ValueError
        If a numeric column has no filled training cell, or a cell is not a number finite in float32.
    """
    import pandas as pd
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    missing = frozenset(missing)
    rows = list(train_rows)
    flags = {name: bool(pd.Series(table.column(name, rows)).isin(missing).any()) for name in kinds}
    numeric = [name for name, cats in kinds.items() if cats is None]
    fitted: dict[str, tuple[float, float, float]] = {name: (0.0, 0.0, 1.0) for name in numeric}
    if numeric:
        values = pd.DataFrame({name: numbers(table, name, rows, missing) for name in numeric})
        empty = [name for name in numeric if values[name].isna().all()]
        if empty:
            raise ValueError(f"{table.where()}: column {empty[0]!r} has no value in the train rows")
        if standardise:
            steps = Pipeline([("fill", SimpleImputer(strategy="median")),
                              ("scale", StandardScaler())]).fit(values)
            medians, scaler = steps.named_steps["fill"].statistics_, steps.named_steps["scale"]
            fitted = {name: (float(medians[i]), float(scaler.mean_[i]), float(scaler.scale_[i]))
                      for i, name in enumerate(numeric)}
    return FeatureTransform(tuple(Column(name, cats, flags[name], *fitted.get(name, (0.0, 0.0, 1.0)))
                                  for name, cats in kinds.items()))
