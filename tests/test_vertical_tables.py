"""Real bundled tables cut over three parties (issue 26 §3): the exporter's files read back through the
CSV party reader with the intended columns, string IDs and overlap, and a short run of
``benchmarks.vertical_tables`` matching the same run over Flower messages with ECDH PSI."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from benchmarks.vertical_tables import HOLDER_SHARE, psi_aligned_ids, run_party_folder, served_all
from clients.vertical.party_csv import csv_settings, read_party_csv
from clients.vertical.party_export import HELD_OUT, holder_sets
from clients.vertical.real_tables import TABLES, write_table_parties
from protocol.vertical import DatasetConfig, VerticalConfig, VerticalStrategyConfig
from strategies.vertical_flower import run_vertical
from tests.fake_grid import task_identity
from tests.vertical_helpers import UNTUNED, party_grid


@pytest.fixture(autouse=True)
def flower_task_identity() -> Iterator[None]:
    with task_identity():
        yield


def _read(folder: Path) -> list:
    """Every party file of ``folder`` read as a node reads it (settings from its ``.json``), with its
    transform."""
    paths = sorted(folder.glob("party*.csv"))
    return [read_party_csv(p, k, csv_settings(p, {})) for k, p in enumerate(paths)]


@pytest.mark.parametrize(("name", "fraction"), [("breast_cancer", 0.05), ("auto_mpg", 0.1), ("wine", 0.3)])
def test_exported_tables_read_back_with_their_columns_string_ids_and_overlap(
        name: str, fraction: float, tmp_path: Path) -> None:
    spec = TABLES[name]
    write_table_parties(name, tmp_path, aligned_fraction=fraction, seed=1)
    read = _read(tmp_path)
    assert len(read) == 3
    for k, ((data, transform), party) in enumerate(zip(read, spec.parties, strict=True)):
        assert [c.name for c in transform.columns] == list(party.columns)  # exactly its columns, numeric
        assert all(c.categories is None for c in transform.columns) and data.x.shape[1] == len(party.columns)
        assert data.ids.dtype.kind == "U" and all(i.startswith("u") for i in data.ids)
        header = (tmp_path / f"party{k}.csv").read_text().splitlines()[0].split(",")
        assert header[0] == party.id_column  # each site keys its rows under its own ID column
        assert (data.y is not None) == (k == 0)
    table = spec.load()
    n_held = round(HELD_OUT * table.n_rows)
    n_train = table.n_rows - 2 * n_held
    trains = [set(data.ids.tolist()) for data, _ in read]
    aligned = set.intersection(*trains)
    assert len(aligned) == round(fraction * n_train)
    assert len(set.union(*trains)) == n_train  # every training user is somewhere
    held = [sum(i in t for t in trains) for i in set.union(*trains) - aligned]
    assert set(held) == {1, 2}  # the others at one or two sites
    for data, _ in read[1:]:  # the same validation and test users at every site
        assert data.val_ids.tolist() == read[0][0].val_ids.tolist() and len(data.test_ids) == n_held
    labels = dict(zip(table.ids.tolist(), table.labels.tolist(), strict=True))
    active = read[0][0]
    assert [spec.load().classes[c] for c in active.y] == [labels[i] for i in active.ids]


def test_remainder_sets_and_the_label_holders_share() -> None:
    assert holder_sets(3, "one") == [(0,), (1,), (2,)]
    assert len(holder_sets(3, "one_or_two")) == 6 and HOLDER_SHARE == 0.5
    assert served_all(0.9, 0.6, 0.1) == pytest.approx((0.1 * 0.9 + 0.45 * 0.6) / 0.55)
    assert served_all(0.9, None, 0.1) is None
    with pytest.raises(ValueError, match="remainder"):
        holder_sets(3, "all")


def test_psi_finds_exactly_the_users_every_site_holds(tmp_path: Path) -> None:
    write_table_parties("wine", tmp_path, aligned_fraction=0.3, seed=0)
    data = [d for d, _ in _read(tmp_path)]
    found = psi_aligned_ids(data)
    assert sorted(found) == sorted(set.intersection(*(set(d.ids.tolist()) for d in data)))
    assert len(found) == len(set(found)) == round(0.3 * len(np.unique(np.concatenate([d.ids for d in data]))))


@pytest.mark.slow  # 7 s idle, 30 s on 2 busy shared cores: the Flower path rebuilds each party per message
def test_a_short_table_run_matches_the_same_run_over_flower_with_ecdh_psi(tmp_path: Path) -> None:
    folder = tmp_path / "wine"
    write_table_parties("wine", folder, aligned_fraction=0.3, seed=0)
    strategy = VerticalStrategyConfig(epochs=2, warmup_epochs=0, attack=False, psi_backend="ecdh", **UNTUNED)
    result = run_party_folder(folder, strategy, seed=0)
    assert result["n_aligned"] == 37 and result["rows"]["active"]["test"] == 27
    cfg = VerticalConfig(dataset=DatasetConfig(n_parties=3, data_dir=str(folder)),
                         strategy=dataclasses.replace(strategy, noise_seed=0), seed=0)
    grid = party_grid(3)
    for k, node in enumerate(grid.contexts):
        grid.contexts[node] = Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                                      node_config={"party": k, "output-dir": str(tmp_path / f"node{k}")})
    over_flower = run_vertical(grid, cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    assert over_flower["alignment"]["backend"] == "ecdh" and over_flower["n_aligned"] == 37
    assert over_flower["test"] == pytest.approx(result["test"])
