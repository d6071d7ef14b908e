"""Vertical runs on a user's own party files (issue 29): the folder is used whole, the saved models store
what the results report, the run record describes the files, absent metrics are absent, refusals are one
line, derived files stay out of the data folder, and free-text columns are caught."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import Context, RecordDict
from rich.console import Console

from clients.vertical.columns import UnseenCategoryWarning
from clients.vertical.csv_example import write_wine_parties
from clients.vertical.handlers import party_data
from clients.vertical.party_csv import csv_settings, read_party_csv
from clients.vertical.party_csv import main as features_main
from clients.vertical.party_files import check_party_count, party_files
from clients.vertical.predict import predict_saved
from protocol.vertical import ACTIVE, DatasetConfig, VerticalConfig, VerticalStrategyConfig
from simulations.deploy_local import main as deploy_main
from simulations.deploy_local import vertical_parties
from simulations.results import vertical_run_record, write_results
from simulations.vertical import (
    ABSENT,
    per_class_table,
    print_epoch,
    read_party_files,
    summary_table,
    use_party_folder,
)
from strategies.grid_utils import node_error
from strategies.vertical_flower import run_vertical
from strategies.vertical_prototype import per_class
from tests.fake_grid import task_identity
from tests.vertical_helpers import UNTUNED, party_grid, run_in_process

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def flower_task_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # nodes without node_config output-dir write under ./privkit-output
    with task_identity():
        yield


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wine_parties(tmp_path_factory.mktemp("wine"), parties=3, aligned_fraction=0.3, seed=0)[0].parent


def _config(folder: Path, n_parties: int = 3, **strategy: object) -> VerticalConfig:
    settings = {"epochs": 3, "warmup_epochs": 0, "alignment": "insecure_plaintext", **UNTUNED, **strategy}
    return VerticalConfig(dataset=DatasetConfig(n_parties=n_parties, data_dir=str(folder)),
                          strategy=VerticalStrategyConfig(**settings), seed=0)


def _folder(wine: Path, tmp_path: Path, names: tuple[str, ...]) -> Path:
    """A copy of the wine folder holding only the party files ``names`` (with their settings files)."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(wine / name, tmp_path / name)
        settings = (wine / name).with_suffix(".json")
        if settings.is_file():
            shutil.copy(settings, tmp_path / settings.name)
    return tmp_path


# --- 1. the folder is used whole --------------------------------------------------------------------
@pytest.mark.parametrize(("names", "given", "expected"), [
    (("party0.csv", "party1.csv", "party2.csv"), None, 3),  # unset: from the folder
    (("party0.csv", "party1.csv", "party2.csv"), 3, 3),
    (("party0.csv", "party1.csv"), None, 2),
    (("party0.csv", "party1.csv", "party2.csv"), 2,
     r"holds 3 party files \(party0.csv, party1.csv, party2.csv\) but dataset.n_parties=2: .*set "
     r"dataset.n_parties=3"),
    (("party0.csv", "party1.csv"), 3, r"holds 2 party files \(party0.csv, party1.csv\) but dataset.n_parties=3"),
    (("party0.csv", "party2.csv"), None, r"party0, party1, … \(.npz or .csv\) without gaps, found \['party0.csv'"),
    (("party1.csv", "party2.csv"), None, r"without gaps"),
    ((), None, r"without gaps, found none"),
])
def test_a_data_folder_is_used_whole_or_refused(wine: Path, tmp_path: Path, names: tuple[str, ...],
                                               given: int | None, expected: int | str) -> None:
    folder = _folder(wine, tmp_path, names)
    cfg = _config(folder, n_parties=given or 2)  # the schema's default 2 when not given
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            use_party_folder(cfg, n_parties_given=given is not None)
        return
    files = use_party_folder(cfg, n_parties_given=given is not None)
    assert cfg.dataset.n_parties == expected == len(files)
    assert [f.name for f in files] == list(names) and cfg.dataset.data_dir == str(folder.resolve())


def test_a_node_refuses_a_folder_with_more_party_files_than_the_run(wine: Path) -> None:
    with pytest.raises(ValueError, match=r"holds 3 party files .* but dataset.n_parties=2"):
        party_data(_config(wine, n_parties=2), 1)
    assert [f.name for f in party_files(wine)] == ["party0.csv", "party1.csv", "party2.csv"]
    (wine / "party2.npz").write_bytes(b"")
    try:
        with pytest.raises(ValueError, match=r"two files of one party: \['party2.csv', 'party2.npz'\]"):
            check_party_count(wine, 3)
    finally:
        (wine / "party2.npz").unlink()


@pytest.mark.parametrize(("parties", "folder", "expected"), [
    (None, True, 3), (3, True, 3), (None, False, 2), (4, False, 4),
    (2, True, r"holds 3 party files \(party0.csv, party1.csv, party2.csv\) but --parties=2"),
])
def test_deploy_local_starts_one_node_per_party_file(wine: Path, parties: int | None, folder: bool,
                                                     expected: int | str) -> None:
    data_dir = wine if folder else None
    if isinstance(expected, str):
        with pytest.raises(ValueError, match=expected):
            vertical_parties(parties, data_dir)
    else:
        assert vertical_parties(parties, data_dir) == expected


def test_deploy_local_refuses_a_disagreeing_parties_before_starting_anything(
        wine: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        deploy_main(["--parties", "2", "--data-dir", str(wine), "--workdir", str(tmp_path / "w")])
    assert stop.value.code == 2
    assert "error: data folder" in capsys.readouterr().err and not (tmp_path / "w").exists()


# --- 2. every saved model stores the fusion the results report -------------------------------------
@pytest.mark.parametrize("strategy", [
    {},  # the prototype method, fusion chosen on validation users
    {"fusion_selection": "fixed"},
    {"local_head": False, "prototypes": False},  # vfl_aligned
    {"prototypes": False},  # vfl_head_fusion
    {"split_learning": False, "prototypes": False},  # active_only
])
def test_saved_models_store_the_reported_fusion_and_reproduce_the_reported_accuracy(
        wine: Path, tmp_path: Path, strategy: dict[str, object]) -> None:
    cfg = dataclasses.replace(_config(wine, **strategy), output_dir=str(tmp_path))
    results = run_vertical(party_grid(3, output_dir=str(tmp_path)), cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    record = torch.load(results["models"][ACTIVE], weights_only=True)
    assert record["fusion"] == results["fusion"]
    active = party_data(cfg, 0)
    passive = {k: predict_saved(results["models"][f"passive{k}"], party_data(cfg, k).test_x) for k in (1, 2)}
    predicted = predict_saved(results["models"][ACTIVE], active.test_x, [passive[k]["features"] for k in (1, 2)])
    reported = results["test"]
    assert np.mean(predicted["aligned"] == active.test_y) == pytest.approx(reported["aligned"])
    for name, classes in [("active_only", predicted["active_only"]),
                          *((f"passive_only_{k}", passive[k]["classes"]) for k in (1, 2))]:
        if reported[name] is None:  # no such predictor in this strategy
            assert (classes == -1).all(), name
        else:
            assert np.mean(classes == active.test_y) == pytest.approx(reported[name]), name


# --- 4. metrics that do not apply are absent ---------------------------------------------------------
@pytest.mark.parametrize(("strategy", "absent"), [
    ({}, set()),
    ({"local_head": False, "prototypes": False, "guard": "off"},  # vfl_aligned: no active-only nor
     {"active_only", "passive_only_1", "passive_only_2", "local_loss"}),  # passive-only predictor
    ({"local_head": False, "prototypes": False},  # with the guard: the label holder's baseline serves
     {"passive_only_1", "passive_only_2", "local_loss"}),  # active-only users
    ({"prototypes": False}, {"passive_only_1", "passive_only_2"}),  # vfl_head_fusion
    ({"split_learning": False, "prototypes": False}, {"passive_only_1", "passive_only_2"}),  # active_only
])
def test_metrics_that_do_not_apply_are_null_in_results_and_a_dash_on_the_console(
        wine: Path, tmp_path: Path, strategy: dict[str, object], absent: set[str]) -> None:
    cfg = _config(wine, **strategy)
    results = run_in_process(cfg)
    for split in ("val", "test"):
        assert set(results[split]) == {"aligned", "active_only", "passive_only_1", "passive_only_2"}
        assert {k for k, v in results[split].items() if v is None} == absent - {"local_loss"}
        assert all(0.0 < v <= 1.0 for v in results[split].values() if v is not None)
    assert all((h["local_loss"] is None) == ("local_loss" in absent) for h in results["history"])
    written = json.loads(write_results(tmp_path, {"results": results}).read_text())["results"]
    assert written["test"] == results["test"]  # None → null, nothing turned into 0.0
    console = Console(width=200, record=True)
    console.print(summary_table(cfg, results))
    rows = [[c.strip() for c in line.split("│")[1:-1]] for line in console.export_text().splitlines()]
    cells = next(r for r in rows if r[:1] == ["test"])
    assert (cells[2] == ABSENT) == ("active_only" in absent)
    assert (cells[3] == ABSENT) == ("passive_only_1" in absent)
    assert "0.0000" not in cells
    print_epoch(0, results["history"][0])  # formats a None loss as a dash


# --- 3. the run record describes the files the run read ----------------------------------------------
def _csv_rows(path: Path) -> tuple[dict[str, int], set[str]]:
    """Row counts per split and the training IDs of a party CSV, counted independently of the reader."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    counts = {split: sum(r["split"] == split for r in rows) for split in ("train", "val", "test")}
    return counts, {r["id"] for r in rows if r["split"] == "train"}


@pytest.mark.parametrize("per_node_files", [False, True])
def test_results_record_the_folder_digests_row_counts_and_aligned_count(wine: Path, per_node_files: bool) -> None:
    cfg = _config(wine, epochs=1)
    grid = party_grid(3)
    if per_node_files:  # a deployment: every node names its own file, the run config names no folder
        cfg = dataclasses.replace(cfg, dataset=DatasetConfig(n_parties=3))
        for k, node in enumerate(grid.contexts):
            grid.contexts[node] = Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                                          node_config={"party": k, "data-file": str(wine / f"party{k}.csv")})
    results = run_vertical(grid, cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    data = results["data"]
    counted = {name: _csv_rows(wine / f"party{k}.csv") for k, name in enumerate(["active", "passive1", "passive2"])}
    aligned = set.intersection(*(ids for _, ids in counted.values()))
    assert data["folder"] == str(wine.resolve()) and data["n_aligned"] == results["n_aligned"] == len(aligned)
    assert list(data["parties"]) == ["active", "passive1", "passive2"]
    for k, (name, party) in enumerate(data["parties"].items()):
        path = wine / f"party{k}.csv"
        assert party["file"] == str(path.resolve())
        assert party["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert party["rows"] == counted[name][0] and party["warnings"] == []
    config = vertical_run_record(cfg, results)["config"]
    assert not {"dataset.name", "dataset.aligned_fraction", "dataset.validation_fraction",
                "dataset.test_fraction"} & set(config)
    assert config["dataset.n_parties"] == 3 and config["dataset.data_dir"] == cfg.dataset.data_dir


def test_a_run_on_the_bundled_split_records_its_name_and_fractions() -> None:
    cfg = VerticalConfig(strategy=VerticalStrategyConfig(epochs=1, warmup_epochs=0, **UNTUNED))
    results = run_in_process(cfg)
    data = results["data"]
    assert data["dataset"] == "digits" and data["aligned_fraction"] == 0.1 and "folder" not in data
    assert all(p["file"] is None and p["sha256"] is None for p in data["parties"].values())
    assert vertical_run_record(cfg, results)["config"]["dataset.name"] == "digits"


# --- 5. a refusal is one error line and exit status 2 -----------------------------------------------
def _no_classes(wine: Path, tmp_path: Path) -> Path:
    folder = _folder(wine, tmp_path / "data", ("party0.csv", "party1.csv", "party2.csv"))
    (folder / "party2.json").write_text('{"id-column": "id"}')
    return folder


@pytest.mark.parametrize(("args", "message", "verbose"), [
    (["dataset.data_dir={no_classes}"],
     r"party file .*/party2.csv: a passive party must declare its run's classes", False),
    (["dataset.data_dir={no_classes}", "dataset.n_parties=2"],
     r"data folder .* holds 3 party files \(party0.csv, party1.csv, party2.csv\) but dataset.n_parties=2", False),
    (["dataset.data_dir={tmp}/nowhere"], r"data folder .*/nowhere does not exist", False),
    (["strategy.epochs=0"], r"strategy.epochs must be >= 1, got 0", False),
    (["dataset.data_dir={no_classes}", "verbose=true"], r"Traceback", True),
])
def test_a_refused_vertical_run_is_one_error_line_and_exit_status_2(
        wine: Path, tmp_path: Path, args: list[str], message: str, verbose: bool) -> None:
    values = {"no_classes": _no_classes(wine, tmp_path), "tmp": tmp_path}
    command = [sys.executable, "-m", "simulations.vertical", *(a.format(**values) for a in args),
               f"hydra.run.dir={tmp_path / 'run'}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if verbose:  # the traceback, and no Ray started before the refusal
        assert done.returncode == 1 and re.search(message, done.stderr) and "ray" not in done.stderr.lower()
        return
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(message, lines[0]), done.stderr


@pytest.mark.parametrize(("reason", "expected"), [
    ("<class 'ValueError'>:<'party file a.csv, row 6: column 'age' is 'twenty''>",
     "party file a.csv, row 6: column 'age' is 'twenty'"),  # a deployment's ClientApp
    ("<class 'ray.exceptions.RayTaskError(ClientAppException)'>:<'ray::ClientAppActor.run()\n  File x\n"
     "ValueError: got 'none'\n\nException ClientAppException occurred. Message: got 'none''>", "got 'none'"),
    ("simulated failure", "simulated failure"),
])
def test_a_nodes_error_reply_is_summarised_on_one_line(reason: str, expected: str) -> None:
    assert node_error(reason) == expected


# --- 6. derived files go to the output folder, never beside the user's CSV -----------------------------
def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


def test_a_read_only_data_folder_works_and_derived_files_go_to_the_output_folder(wine: Path, tmp_path: Path) -> None:
    folder = _folder(wine, tmp_path / "data", ("party0.csv", "party1.csv", "party2.csv"))
    before = _snapshot(folder)
    modes = {p: p.stat().st_mode for p in [folder, *folder.iterdir()]}
    for path in folder.iterdir():
        path.chmod(0o444)
    folder.chmod(0o555)  # read-only (a run as root could still write: the snapshot below catches that)
    out = tmp_path / "run"
    try:
        cfg = dataclasses.replace(_config(folder, epochs=1), output_dir=str(out))
        results = run_vertical(party_grid(3, output_dir=str(out)), cfg, node_wait_timeout=1)  # type: ignore[arg-type]
        assert _snapshot(folder) == before  # nothing written, renamed or touched in the data folder
    finally:
        for path, mode in modes.items():
            path.chmod(mode)
    for k, party in enumerate(results["data"]["parties"].values()):
        assert party["transform"] == str(out.resolve() / f"party{k}.features.json")
    new = tmp_path / "new.csv"  # the saved transform prepares new rows exactly as the run prepared them
    lines = (folder / "party1.csv").read_text().splitlines()
    new.write_text("\n".join([lines[0], *(line for line in lines[1:] if line.split(",")[1] == "train")]) + "\n")
    features_main(["--transform", str(out / "party1.features.json"), "--csv", str(new), "--out", str(tmp_path / "x.npy")])
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), party_data(cfg, 1).x)


# --- 7. a free-text column is refused naming it; per-party drop-columns / column-types -----------------
def _people(n_train: int = 40, n_held: int = 10) -> str:
    """A passive party's CSV: a free-text ``name`` (unique per user), a ``town``, a numeric-coded ``pclass``."""
    lines = ["id,split,name,town,pclass,fare"]
    for i in range(n_train + 2 * n_held):
        split = "train" if i < n_train else "val" if i < n_train + n_held else "test"
        lines.append(f"u{i},{split},Passenger {i} Smith,{('north', 'south', 'east')[i % 3]},{1 + i % 3},{i * 1.5}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("settings", "outcome"), [
    ({}, r"column 'name' looks like free text or an ID \(40 distinct values in 40 filled train rows\).*"
         r"Drop it \(drop-columns: \"name\" in p.json or node_config\).*column-types: \"name=categorical\""),
    ({"drop-columns": "name"}, ["town", "pclass", "fare"]),
    ({"drop-columns": ["name", "fare"]}, ["town", "pclass"]),  # a JSON list in party{k}.json
    ({"drop-columns": "name", "column-types": {"pclass": "categorical"}}, ["town", "pclass", "fare"]),
    ({"column-types": "name=categorical"}, ["name", "town", "pclass", "fare"]),  # kept: a warning instead
    ({"drop-columns": "nmae"}, r"'drop-columns' names \['nmae'\], not columns of the file"),
    ({"drop-columns": "name,id"}, r"'drop-columns' cannot drop \['id'\]: the ID, split and label columns"),
    ({"drop-columns": "name", "column-types": "town=numeric"}, r"row 2: column 'town' is 'north', not a finite"),
    ({"column-types": "name:categorical"}, r"'column-types' must read 'column=categorical;other=numeric'"),
    ({"drop-columns": "name", "column-types": "pclass=number"}, r"'column-types' must read"),
])
def test_free_text_columns_are_refused_and_dropped_or_declared_per_party(
        tmp_path: Path, settings: dict[str, object], outcome: str | list[str]) -> None:
    path = tmp_path / "p.csv"
    path.write_text(_people())
    (tmp_path / "p.json").write_text(json.dumps({"n-classes": 2, **settings}))
    options = csv_settings(path, {})
    if isinstance(outcome, str):
        with pytest.raises(ValueError, match=outcome):
            read_party_csv(path, 1, options)
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data, transform = read_party_csv(path, 1, options)
    assert [c.name for c in transform.columns] == outcome
    kinds = {c.name: c.categories for c in transform.columns}
    declared = options.get("column-types", "")
    assert kinds["pclass"] == (("1", "2", "3") if "pclass=categorical" in declared else None)  # else a number
    assert data.x.shape[1] == transform.width
    unseen = [str(w.message) for w in caught if issubclass(w.category, UnseenCategoryWarning)]
    if "name" in outcome:  # every held-out name is new: warned about, and recorded with the data
        assert len(unseen) == 1 and "column 'name': 20 of 20 held-out values (100 %) never occur" in unseen[0]
        assert data.notes == (unseen[0],)
    else:
        assert not unseen and data.notes == ()


def test_the_example_names_column_is_refused_then_dropped_or_declared(wine: Path, tmp_path: Path) -> None:
    names = write_wine_parties(tmp_path / "names", parties=3, aligned_fraction=0.3, seed=0, names=True)[0].parent
    cfg = _config(names)
    with pytest.raises(ValueError, match=r"party1.csv: column 'name' looks like free text or an ID \(66 distinct"):
        read_party_files(cfg)
    settings = json.loads((names / "party1.json").read_text())
    (names / "party1.json").write_text(json.dumps({**settings, "column-types": {"name": "categorical"}}))
    warned = read_party_files(cfg)
    assert len(warned) == 1 and "column 'name'" in warned[0]
    assert run_in_process(cfg)["data"]["parties"]["passive1"]["warnings"] == warned
    (names / "party1.json").write_text(json.dumps({**settings, "drop-columns": ["name"]}))
    assert read_party_files(cfg) == []
    dropped = party_data(cfg, 1)
    np.testing.assert_array_equal(dropped.x, party_data(_config(wine), 1).x)  # as if it never had the column


# --- 8. per-class recall and confusion matrices per population; active_only runs no PSI -----------------
def test_per_class_recall_of_a_confusion_matrix() -> None:
    view = per_class(np.array([[3, 1, 0], [0, 0, 0], [2, 0, 2]]))
    assert view == {"recall": [0.75, None, 0.5], "confusion": [[3, 1, 0], [0, 0, 0], [2, 0, 2]]}


@pytest.mark.parametrize("strategy", [{}, {"local_head": False, "prototypes": False}])
def test_each_population_has_its_confusion_matrix_and_per_class_recall(
        wine: Path, strategy: dict[str, object]) -> None:
    results = run_in_process(_config(wine, **strategy))
    test_y = party_data(_config(wine), 0).test_y
    assert results["data"]["classes"] == ["class_0", "class_1", "class_2"]  # the label holder's names
    for split in ("val", "test"):
        assert set(results["per_class"][split]) == set(results[split])
        for population, accuracy in results[split].items():
            view = results["per_class"][split][population]
            if accuracy is None:
                assert view is None, population
                continue
            counts = np.array(view["confusion"])
            assert counts.shape == (3, 3) and counts.sum() == len(test_y if split == "test" else
                                                                   party_data(_config(wine), 0).val_y)
            assert np.trace(counts) / counts.sum() == pytest.approx(accuracy), population
            assert view["recall"] == pytest.approx([counts[c, c] / counts[c].sum() for c in range(3)])
    assert np.array(results["per_class"]["test"]["aligned"]["confusion"]).sum(axis=1).tolist() == \
        np.bincount(test_y, minlength=3).tolist()  # rows are the true classes
    console = Console(width=200, record=True)
    console.print(per_class_table(results))
    text = console.export_text()
    assert "class_0" in text and "aligned users" in text
    assert ("passive-only users (party 1)" in text) == (results["test"]["passive_only_1"] is not None)


def test_a_head_that_predicts_one_class_shows_in_the_per_class_table() -> None:
    one_class = {"recall": [1.0, 0.0], "confusion": [[5, 0], [4, 0]]}
    results = {"per_class": {"test": {"aligned": one_class, "active_only": None}}, "data": {"classes": ["no", "yes"]}}
    console = Console(width=200, record=True)
    console.print(per_class_table(results))
    row = next(line for line in console.export_text().splitlines() if "aligned users" in line)
    assert "1.00 (9)" in row and "0.00 (0)" in row and "active-only" not in console.export_text()


def test_the_active_only_baseline_runs_no_psi(wine: Path) -> None:
    cfg = _config(wine, split_learning=False, prototypes=False, alignment="psi", psi_key_bits=512)
    grid = party_grid(3)
    results = run_vertical(grid, cfg, node_wait_timeout=1)  # type: ignore[arg-type]
    kinds = {m.metadata.message_type for m in grid.sent}
    assert not [k for k in kinds if "psi" in k], sorted(kinds)
    assert results["alignment"] == {"method": "none"} and results["n_aligned"] is None
    assert results["data"]["n_aligned"] is None and results["test"]["active_only"] is not None
    assert results["test"]["aligned"] == results["test"]["active_only"]  # the head predicts every user
