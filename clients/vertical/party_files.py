"""One party's data as a file of its own, for deployments where every SuperNode holds its own data.

A party file is an ``.npz`` with

- ``party`` (int): the party index (``0`` = the label holder), checked against the node's ``party``;
- ``n_classes`` (int): the number of label classes, the same at every party;
- ``ids`` / ``x``: the party's training users (string IDs, unique) and its feature columns of them;
- ``val_ids`` / ``val_x`` and ``test_ids`` / ``test_x``: the held-out users, the same users at every
  party (the protocol checks a digest of these ID sets at alignment);
- ``y`` / ``val_y`` / ``test_y``: labels, at party 0 only.

A SuperNode reads it when its ``node_config`` has ``data-file``
(``--node-config "party=1 data-file='/data/passive1.npz'"``); without it the node rebuilds its part of
the configured bundled dataset. ``python -m clients.vertical.party_files --out DIR`` writes the files of a
bundled split, which shows the format and lets a multi-machine run be rehearsed on one machine.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import warnings
from pathlib import Path

import numpy as np

from clients.vertical.data import PartyData, make_vertical_split

DATA_FILE_NODE_CONFIG_KEY = "data-file"
"""``node_config`` key naming this node's party file."""
LABEL_KEYS = ("y", "val_y", "test_y")
PARTY_FILE = re.compile(r"party(\d+)\.(npz|csv)")
"""Names of party files in a data folder: ``party{k}.npz`` or ``party{k}.csv``."""


def party_files(folder: str | Path) -> list[Path]:
    """The party files of a data folder, in party order: ``party0 … party{K-1}``, each ``.npz`` or ``.csv``.

    Raises
    ------
    ValueError
        If the folder does not exist, holds no ``party0`` file, a party has both an ``.npz`` and a
        ``.csv``, or the indices have a gap (e.g. ``party0``, ``party2``); the message names the files.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"data folder {folder} does not exist")
    found: dict[int, list[str]] = {}
    for entry in sorted(folder.iterdir()):
        match = PARTY_FILE.fullmatch(entry.name)
        if match and entry.is_file():
            found.setdefault(int(match.group(1)), []).append(entry.name)
    names = sorted(n for group in found.values() for n in group)
    doubled = [group for group in found.values() if len(group) > 1]
    if doubled:
        raise ValueError(f"data folder {folder} holds two files of one party: {doubled[0]}; keep one")
    if not found or sorted(found) != list(range(len(found))):
        raise ValueError(f"data folder {folder} must hold party0, party1, … (.npz or .csv) without gaps, "
                         f"found {names or 'none'}")
    return [folder / found[k][0] for k in range(len(found))]


def check_party_count(folder: str | Path, n_parties: int, setting: str = "dataset.n_parties") -> list[Path]:
    """The folder's party files, refused unless there are exactly ``n_parties`` (a run uses all of them).

    Raises
    ------
    ValueError
        Naming the files and ``setting`` if the folder holds another number of party files.
    """
    files = party_files(folder)
    if len(files) != n_parties:
        raise ValueError(f"data folder {folder} holds {len(files)} party files "
                         f"({', '.join(f.name for f in files)}) but {setting}={n_parties}: a run uses every "
                         f"party file of its folder; set {setting}={len(files)} (or leave it unset), or move "
                         "the extra files out")
    return files


def save_party_file(data: PartyData, path: str | Path) -> Path:
    """Write ``data`` as a party file (see the module docstring); return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"party": np.int64(data.index), "n_classes": np.int64(data.n_classes),
              "ids": data.ids.astype(str), "x": data.x, "val_ids": data.val_ids.astype(str),
              "val_x": data.val_x, "test_ids": data.test_ids.astype(str), "test_x": data.test_x}
    if data.role == "active":
        arrays.update(y=data.y, val_y=data.val_y, test_y=data.test_y)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path


def load_party_file(path: str | Path, index: int) -> PartyData:
    """Read and check the party file of party ``index``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not an .npz archive (e.g. a CSV), holds object-dtype arrays, is for another party,
        lacks an array, has duplicate or empty IDs, rows that do not match their IDs, NaN/inf features,
        labels at a passive party (or none at the label holder), or labels outside ``[0, n_classes)``.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"party file {path} does not exist")
    where = f"party file {path}"
    with path.open("rb") as handle:
        if handle.read(4) != b"PK\x03\x04":  # every .npz is a zip archive
            raise ValueError(f"{where} is not an .npz archive; a CSV party file must be named *.csv "
                             "(read with node_config id-column / label-column: clients.vertical.party_csv)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as err:  # numpy refuses object arrays without pickle
        raise ValueError(f"{where} holds an object-dtype array: store IDs as str "
                         "(ids.astype(str)) and features as numbers") from err
    missing = [k for k in ("party", "n_classes", "ids", "x", "val_ids", "val_x", "test_ids", "test_x")
               if k not in arrays]
    if missing:
        raise ValueError(f"{where} lacks {missing}")
    party = _whole_number(arrays["party"], f"{where}: party", minimum=0)
    if party != index:
        raise ValueError(f"{where} holds party {party}, but this node is party {index}")
    n_classes = _whole_number(arrays["n_classes"], f"{where}: n_classes", minimum=2)
    active = index == 0
    labels = [k for k in LABEL_KEYS if k in arrays]
    if not active and labels:
        raise ValueError(f"{where}: a passive party must not hold labels, found {labels}")
    if active and len(labels) != len(LABEL_KEYS):
        raise ValueError(f"{where}: the label holder needs {list(LABEL_KEYS)}, found {labels}")
    parts = {}
    for prefix in ("", "val_", "test_"):
        ids, x = _checked_rows(arrays, prefix, where)
        y = (_checked_labels(arrays[f"{prefix}y"], len(ids), n_classes, f"{where}: {prefix}y")
             if active else None)
        if prefix:  # held-out users are kept sorted by ID, the order every party shares
            order = np.argsort(ids)
            ids, x, y = ids[order], x[order], None if y is None else y[order]
        parts[prefix] = (ids, x, y)
    if active and len(np.unique(parts[""][2])) < 2:
        raise ValueError(f"{where}: y holds a single class ({int(parts[''][2][0])}): a classifier needs "
                         "training users of >= 2 classes")
    shapes = {x.shape[1:] for _, x, _ in parts.values()}
    if len(shapes) != 1:
        raise ValueError(f"{where}: x, val_x and test_x have different feature shapes {sorted(shapes)}")
    return PartyData(index=index, role="active" if active else "passive",
                     ids=parts[""][0], x=parts[""][1], y=parts[""][2],
                     val_ids=parts["val_"][0], val_x=parts["val_"][1], val_y=parts["val_"][2],
                     test_ids=parts["test_"][0], test_x=parts["test_"][1], test_y=parts["test_"][2],
                     n_classes=n_classes)


FEATURE_SCALE_WARNING = 1e6
"""Largest |feature| read without a warning: the encoders' initialisation and learning rates assume
features of order 1 (standardised columns)."""


class FeatureScaleWarning(UserWarning):
    """A party's features are far outside the scale the encoders are trained for."""


def _whole_number(value: np.ndarray, what: str, *, minimum: int) -> int:
    """A 0-d array holding an integer >= ``minimum`` (an integer-valued float is not accepted)."""
    if value.shape != () or value.dtype.kind not in "iu" or int(value) < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value.tolist()!r} ({value.dtype})")
    return int(value)


def _checked_rows(arrays: dict[str, np.ndarray], prefix: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    ids, x = arrays[f"{prefix}ids"], arrays[f"{prefix}x"]
    if ids.ndim != 1 or ids.dtype.kind != "U":
        raise ValueError(f"{where}: {prefix}ids must be a 1-D array of strings, got {ids.dtype} {ids.shape}")
    if len(ids) == 0:
        raise ValueError(f"{where}: {prefix}ids is empty")
    unique, counts = np.unique(ids, return_counts=True)
    if len(unique) != len(ids):
        raise ValueError(f"{where}: {prefix}ids has duplicates, e.g. {unique[counts > 1][:3].tolist()}")
    if x.ndim < 2 or len(x) != len(ids):
        raise ValueError(f"{where}: {prefix}x must have one row per ID ({len(ids)}), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        raise ValueError(f"{where}: {prefix}x has NaN/inf in the rows of IDs {ids[bad][:3].tolist()}")
    if np.any(empty := np.char.str_len(ids) == 0):
        raise ValueError(f"{where}: {prefix}ids has an empty-string ID at row {int(np.argmax(empty))}")
    scale = float(np.abs(x).max()) if x.size else 0.0
    if scale > FEATURE_SCALE_WARNING:
        warnings.warn(f"{where}: {prefix}x reaches |x| = {scale:.3g}; the encoders are trained for features "
                      "of order 1: standardise each column on this party's own rows (mean 0, std 1)",
                      FeatureScaleWarning, stacklevel=3)
    return ids, x


def _checked_labels(y: np.ndarray, n: int, n_classes: int, what: str) -> np.ndarray:
    if y.shape != (n,) or y.dtype.kind not in "iu":
        raise ValueError(f"{what} must be {n} integer labels, got {y.dtype} {y.shape}")
    if n and (y.min() < 0 or y.max() >= n_classes):
        raise ValueError(f"{what} must lie in [0, {n_classes}), got [{y.min()}, {y.max()}]")
    return y.astype(np.int64)


def file_sha256(path: str | Path) -> str:
    """SHA-256 of the bytes of the file at ``path`` (hex), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def held_out_digest(data: PartyData) -> str:
    """SHA-256 of the sorted validation and test IDs: equal at every party of a consistent deployment.

    Reveals only whether two parties hold the same held-out users (their IDs are aligned in the clear by
    design: every party predicts them together).
    """
    text = "\n".join(["val", *sorted(data.val_ids.tolist()), "test", *sorted(data.test_ids.tolist())])
    return hashlib.sha256(text.encode()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    """Write one party file per party of a bundled vertical split."""
    parser = argparse.ArgumentParser(description="write per-party data files of a bundled vertical split")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--parties", type=int, default=2)
    parser.add_argument("--aligned-fraction", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="directory for party0.npz, party1.npz, ...")
    args = parser.parse_args(argv)
    split = make_vertical_split(args.dataset, n_parties=args.parties, aligned_fraction=args.aligned_fraction,
                                seed=args.seed)
    for party in split.parties:
        print(save_party_file(party, args.out / f"party{party.index}.npz"))


if __name__ == "__main__":
    main()
