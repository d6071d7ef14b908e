"""Per-party data files: format round trip, refused inputs, and a Flower run whose nodes read their files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from clients.psi import intersect
from clients.psi.ids import prepare_ids
from clients.vertical.data import PartyData, make_vertical_split
from clients.vertical.handlers import party_index
from clients.vertical.parties import make_party
from clients.vertical.party_files import FeatureScaleWarning, load_party_file, main
from strategies.vertical_flower import run_vertical
from strategies.vertical_prototype import InProcessLink, VerticalProtocolError, VerticalPrototype
from tests.fake_grid import task_identity
from tests.vertical_helpers import flower_config, party_grid, run_in_process


@pytest.fixture(autouse=True)
def flower_task_identity() -> Iterator[None]:
    """Outside a ServerApp process Flower's ``Message`` needs a task identity; set one, then restore."""
    with task_identity():
        yield


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("parties")
    main(["--dataset", "digits", "--parties", "2", "--aligned-fraction", "0.1", "--seed", "0", "--out", str(out)])
    return out


def _arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


def test_party_files_round_trip_the_split(files: Path) -> None:
    split = make_vertical_split("digits", n_parties=2, aligned_fraction=0.1, seed=0)
    for party in split.parties:
        loaded = load_party_file(files / f"party{party.index}.npz", party.index)
        assert loaded.role == party.role and loaded.n_classes == party.n_classes
        for field in ("ids", "x", "y", "val_ids", "val_x", "val_y", "test_ids", "test_x", "test_y"):
            original, read = getattr(party, field), getattr(loaded, field)
            assert (read is None) == (original is None), field
            if read is not None:
                assert np.array_equal(read, original), field


def _write(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with path.open("wb") as handle:
        np.savez(handle, **arrays)
    return path


@pytest.mark.parametrize(("name", "index", "change", "match"), [
    ("other party", 1, {"party": np.int64(0)}, "holds party 0, but this node is party 1"),
    ("missing x", 1, {"x": None}, r"lacks \['x'\]"),
    ("duplicate ids", 1, {"ids": lambda a: np.concatenate([a["ids"][:1], a["ids"][:-1]])}, "duplicates"),
    ("empty ids", 1, {"ids": lambda a: a["ids"][:0], "x": lambda a: a["x"][:0]}, "ids is empty"),
    ("rows do not match ids", 1, {"x": lambda a: a["x"][:-1]}, "one row per ID"),
    ("NaN features", 1, {"val_x": lambda a: np.where(np.arange(len(a["val_x"]))[:, None, None] == 2, np.nan,
                                                     a["val_x"])}, "val_x has NaN/inf"),
    ("labels at a passive party", 1, {"y": lambda a: np.zeros(len(a["ids"]), dtype=np.int64)},
     "must not hold labels"),
    ("label holder without labels", 0, {"test_y": None}, "needs"),
    ("label out of range", 0, {"y": lambda a: np.full(len(a["ids"]), 10)}, r"in \[0, 10\)"),
    ("feature shapes differ", 1, {"test_x": lambda a: a["test_x"][:, :, :2]}, "different feature shapes"),
    ("empty-string ID", 1, {"ids": lambda a: np.concatenate([[""], a["ids"][1:]])},
     "ids has an empty-string ID at row 0"),
    ("fractional class count", 1, {"n_classes": np.float64(2.5)}, r"n_classes must be an integer >= 2, got 2.5"),
    ("integer-valued float class count", 1, {"n_classes": np.float64(10.0)}, "n_classes must be an integer"),
    ("fractional party index", 1, {"party": np.float64(1.5)}, r"party must be an integer >= 0, got 1.5"),
    ("a single class", 0, {"y": lambda a: np.zeros(len(a["ids"]), dtype=np.int64)},
     r"y holds a single class \(0\): a classifier needs training users of >= 2 classes"),
])
def test_bad_party_files_are_refused(files: Path, tmp_path: Path, name: str, index: int, change: dict,
                                     match: str) -> None:
    arrays = _arrays(files / f"party{index}.npz")
    for key, value in change.items():
        if value is None:
            del arrays[key]
        else:
            arrays[key] = value(arrays) if callable(value) else value
    with pytest.raises(ValueError, match=match):
        load_party_file(_write(tmp_path / "bad.npz", arrays), index)


def test_missing_party_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        load_party_file(tmp_path / "nope.npz", 0)


def test_parties_with_different_held_out_users_are_refused(files: Path, tmp_path: Path) -> None:
    cfg = flower_config()
    active = load_party_file(files / "party0.npz", 0)
    arrays = _arrays(files / "party1.npz")
    arrays["test_ids"], arrays["test_x"] = arrays["test_ids"][1:], arrays["test_x"][1:]
    passive: PartyData = load_party_file(_write(tmp_path / "party1.npz", arrays), 1)
    parties = {"active": make_party(active, cfg), "passive1": make_party(passive, cfg)}
    common = sorted(set(active.ids.tolist()) & set(passive.ids.tolist()))
    with pytest.raises(VerticalProtocolError, match="different validation/test users"):
        VerticalPrototype(cfg).run(InProcessLink(parties), lambda link: {
            n: {"aligned_ids": common} for n in link.parties})


def test_flower_nodes_reading_their_own_files_reproduce_the_bundled_run(files: Path) -> None:
    cfg = flower_config(epochs=2)
    grid = party_grid(2)
    for k, node in enumerate(grid.contexts):
        grid.contexts[node] = Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                                      node_config={"party": k, "data-file": str(files / f"party{k}.npz")})
    over_files = run_vertical(grid, cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    assert over_files["test"] == pytest.approx(run_in_process(cfg)["test"])


def test_a_node_given_another_party_s_file_fails_the_run_clearly(files: Path) -> None:
    grid = party_grid(2)
    for k, node in enumerate(grid.contexts):
        grid.contexts[node] = Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                                      node_config={"party": k, "data-file": str(files / "party0.npz")})
    with pytest.raises(VerticalProtocolError, match="holds party 0, but this node is party 1"):
        run_vertical(grid, flower_config(epochs=1), node_wait_timeout=1)  # type: ignore[arg-type]


def test_features_far_off_the_encoders_scale_warn(files: Path, tmp_path: Path) -> None:
    arrays = _arrays(files / "party1.npz")
    arrays["x"] = arrays["x"] * 1e30
    with pytest.warns(FeatureScaleWarning, match=r"x reaches \|x\| = 1e\+30.*standardise each column"):
        load_party_file(_write(tmp_path / "scaled.npz", arrays), 1)


@pytest.mark.parametrize(("config", "match"), [
    ({"party": 1.5}, "node_config 'party' must be a whole number >= 0, got 1.5"),
    ({"party": "1.0"}, "node_config 'party' must be a whole number >= 0, got '1.0'"),
    ({"party": True}, "must be a whole number"),
    ({"partition-id": -1}, "party index must be in"),
])
def test_a_fractional_or_odd_party_index_is_refused(config: dict, match: str) -> None:
    context = Context(run_id=1, node_id=1, node_config=config, state=RecordDict(), run_config={})
    with pytest.raises(ValueError, match=match):
        party_index(context, 2)


@pytest.mark.parametrize(("ids", "error", "match"), [
    (["a", "", "b"], ValueError, "ID at row 1: string IDs must not be empty"),
    ("abc", TypeError, "ids must be a sequence of IDs, got one str .*read as its characters"),
    (b"abc", TypeError, "got one bytes"),
])
def test_bad_id_sets_are_refused_before_any_crypto(ids: object, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        prepare_ids(ids)  # type: ignore[arg-type]
    with pytest.raises(error, match=match):
        intersect(ids, ["a", "b"], allow_insecure_key_size=True, key_bits=512)  # type: ignore[arg-type]
