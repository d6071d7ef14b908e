"""Party CSV files: exact feature preparation, statistics fitted per party on its own training rows, refused
inputs named by file and row, and vertical runs (in process and over Flower messages) from CSV party files."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, RecordDict

from clients.vertical.csv_example import write_wine_parties
from clients.vertical.handlers import party_data
from clients.vertical.party_csv import FeatureTransform, csv_settings, load_party_csv, main, transform_path
from clients.vertical.party_files import load_party_file
from protocol.vertical import DatasetConfig, VerticalConfig, VerticalStrategyConfig
from simulations.deploy_local import node_configs
from strategies.vertical_flower import run_vertical
from tests.fake_grid import task_identity
from tests.vertical_helpers import UNTUNED, party_grid, run_in_process

ACTIVE_CSV = """id,split,age,town,label
u1,train,10,north,yes
u2,train,,south,no
u3,train,30,,yes
u4,train,50,north,no
u5,val,20,east,yes
u6,test,,south,no
"""


@pytest.fixture(autouse=True)
def flower_task_identity() -> Iterator[None]:
    with task_identity():
        yield


@pytest.fixture(scope="module")
def wine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_wine_parties(tmp_path_factory.mktemp("wine"), parties=3, aligned_fraction=0.3, seed=0)[0].parent


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_party_csv_is_filled_flagged_standardised_and_one_hot(tmp_path: Path) -> None:
    data = load_party_csv(_write(tmp_path / "a.csv", ACTIVE_CSV), 0, {"id-column": "id", "label-column": "label",
                                                                     "classes": "no,yes"}, tmp_path / "out")
    # age over the train rows: 10, (30 = median of 10, 30, 50), 30, 50 -> mean 30, std sqrt(200)
    std = np.sqrt(200.0)
    assert data.ids.tolist() == ["u1", "u2", "u3", "u4"] and data.y.tolist() == [1, 0, 1, 0]
    expected = np.array([  # age, age missing, town north, town south, town missing
        [-20 / std, 0, 1, 0, 0], [0, 1, 0, 1, 0], [0, 0, 0, 0, 1], [20 / std, 0, 1, 0, 0]], dtype=np.float32)
    np.testing.assert_allclose(data.x, expected, rtol=1e-6)
    # an unseen category ("east") is all zeros; a missing age takes the train median (30 -> 0)
    np.testing.assert_allclose(data.val_x, [[-10 / std, 0, 0, 0, 0]], rtol=1e-6)
    np.testing.assert_allclose(data.test_x, [[0, 1, 0, 1, 0]], rtol=1e-6)
    assert data.val_ids.tolist() == ["u5"] and data.test_y.tolist() == [0] and data.n_classes == 2
    saved = FeatureTransform.from_json(transform_path(tmp_path / "out", 0).read_text())
    assert [c.name for c in saved.columns] == ["age", "town"] and saved.columns[0].median == 30.0


def test_the_saved_transform_prepares_new_rows_for_predict(wine: Path, tmp_path: Path) -> None:
    path = wine / "party1.csv"
    data = load_party_csv(path, 1, csv_settings(path, {}), tmp_path)
    lines = path.read_text().splitlines()
    train = [line for line in lines[1:] if line.split(",")[1] == "train"]
    _write(tmp_path / "new.csv", "\n".join([lines[0], *train]) + "\n")
    main(["--transform", str(transform_path(tmp_path, 1)), "--csv", str(tmp_path / "new.csv"),
          "--out", str(tmp_path / "x.npy")])
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), data.x)
    assert abs(data.x[:, 0].mean()) < 1e-6 and data.x[:, 0].std() == pytest.approx(1.0, abs=1e-5)


def test_each_party_fits_its_transform_on_its_own_training_rows_only(wine: Path, tmp_path: Path) -> None:
    out, copy_out = tmp_path / "out", tmp_path / "copy_out"  # each party writes its fit to its output folder
    before = load_party_csv(wine / "party1.csv", 1, csv_settings(wine / "party1.csv", {}), out)
    fitted = transform_path(out, 1).read_text()
    copy = tmp_path / "copy"
    shutil.copytree(wine, copy)
    for k in (0, 2):  # other parties' rows: halve them and change every value
        lines = (copy / f"party{k}.csv").read_text().splitlines()
        (copy / f"party{k}.csv").write_text("\n".join([lines[0], *(
            ",".join(c if j < 2 or not c.replace(".", "").isdigit() else str(float(c) * 7 + 3)
                     for j, c in enumerate(line.split(","))) for line in lines[1::2])]) + "\n")
        load_party_csv(copy / f"party{k}.csv", k, csv_settings(copy / f"party{k}.csv", {}), copy_out)
    lines = (copy / "party1.csv").read_text().splitlines()  # this party's held-out rows: changed too
    held = [",".join([*line.split(",")[:2], "999", *line.split(",")[3:]]) if line.split(",")[1] != "train"
            else line for line in lines[1:]]
    (copy / "party1.csv").write_text("\n".join([lines[0], *held]) + "\n")
    after = load_party_csv(copy / "party1.csv", 1, csv_settings(copy / "party1.csv", {}), copy_out)
    assert transform_path(copy_out, 1).read_text() == fitted
    np.testing.assert_array_equal(after.x, before.x)
    assert not np.array_equal(after.val_x, before.val_x)
    load_party_csv(wine / "party2.csv", 2, csv_settings(wine / "party2.csv", {}), out)
    other = FeatureTransform.from_json(transform_path(copy_out, 2).read_text())
    assert other.columns[0].mean != FeatureTransform.from_json(  # the changed party's own fit did change
        transform_path(out, 2).read_text()).columns[0].mean


@pytest.mark.parametrize(("index", "text", "settings", "match"), [
    (0, ACTIVE_CSV.replace("u2,", ",", 1), {}, r"a.csv, row 3: empty ID in column 'id'"),
    (0, ACTIVE_CSV.replace("u3,", "u1,", 1), {}, r"a.csv, row 4: ID 'u1' repeats row 2"),
    (0, ACTIVE_CSV.replace("u5,val", "u5,valid"), {}, r"a.csv, row 6: split is 'valid', must be one of"),
    (0, ACTIVE_CSV.replace("u4,train,50,north,no", "u4,train,50,north,"), {"classes": "no,yes"},
     r"a.csv, row 5: label '' in column 'label' is missing or not a class"),
    (0, ACTIVE_CSV.replace("u5,val,20", "u5,val,twenty"), {}, r"a.csv, row 6: column 'age' is 'twenty', not a"),
    (0, ACTIVE_CSV.replace("u5,val,20", "u5,val,inf"), {}, r"a.csv, row 6: column 'age' is 'inf'"),
    (0, ACTIVE_CSV.replace("u6,test,,south,no", "u6,test,south,no"), {}, r"a.csv, row 7: 4 cells, the header"),
    (0, ACTIVE_CSV.replace("u6,test", "u6,val"), {}, r"a.csv: no row has split='test'"),
    (0, ACTIVE_CSV.replace(",split", ",part"), {}, r"a.csv: no column 'split'"),
    (0, ACTIVE_CSV, {"id-column": "user"}, r"a.csv: no column 'user'"),
    (0, ACTIVE_CSV, {"categories": "town=north|south"},
     r"a.csv, row 6: unknown category 'east' in column 'town'"),
    (1, ACTIVE_CSV, {"classes": "no,yes"}, r"a.csv: a passive party must not hold labels, found column 'label'"),
    (1, ACTIVE_CSV.replace(",label", ",other"), {}, r"a passive party must declare its run's classes"),
    (0, "", {}, r"a.csv is empty"),
])
def test_bad_party_csvs_are_refused_naming_file_and_row(tmp_path: Path, index: int, text: str, settings: dict,
                                                        match: str) -> None:
    path = _write(tmp_path / "a.csv", text)
    with pytest.raises(ValueError, match=match):
        load_party_csv(path, index, csv_settings(path, settings))


def test_npz_loading_errors_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"is not an .npz archive; a CSV party file must be named \*.csv") as err:
        load_party_file(_write(tmp_path / "party0.npz", ACTIVE_CSV), 0)
    path = tmp_path / "objects.npz"
    np.savez(path, party=np.int64(1), n_classes=np.int64(2), ids=np.array(["a", 1], dtype=object),
             x=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="holds an object-dtype array: store IDs as str") as err2:
        load_party_file(path, 1)
    assert "allow_pickle" not in str(err.value) + str(err2.value)


def _wine_config(wine: Path, **strategy: object) -> VerticalConfig:
    settings = {"epochs": 6, "warmup_epochs": 0, "alignment": "insecure_plaintext", **UNTUNED, **strategy}
    return VerticalConfig(dataset=DatasetConfig(n_parties=3, data_dir=str(wine)),
                          strategy=VerticalStrategyConfig(**settings), seed=0)


def test_a_vertical_run_from_csv_party_files(wine: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nodes without node_config output-dir write under ./privkit-output
    cfg = _wine_config(wine)
    parties = [party_data(cfg, k) for k in range(3)]
    assert [p.x.shape[1] for p in parties] == [14, 12, 12] and parties[2].n_classes == 3
    results = run_in_process(cfg)
    assert results["test"]["aligned"] >= 0.8  # 27 test wines, 3 cultivars (majority: 0.4); got 0.85
    grid = party_grid(3)
    for k, node in enumerate(grid.contexts):
        grid.contexts[node] = Context(run_id=1, node_id=node, state=RecordDict(), run_config={},
                                      node_config={"party": k, "data-file": str(wine / f"party{k}.csv")})
    over_flower = run_vertical(grid, dataclasses.replace(cfg, dataset=DatasetConfig(n_parties=3)),
                               node_wait_timeout=1)  # type: ignore[arg-type]
    assert over_flower["test"] == pytest.approx(results["test"])


def test_a_data_dir_with_two_files_of_one_party_is_refused(wine: Path, tmp_path: Path) -> None:
    shutil.copy(wine / "party1.csv", tmp_path / "party1.csv")
    (tmp_path / "party1.npz").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"exactly one of party1.npz / party1.csv, found"):
        party_data(_wine_config(tmp_path), 1)


def test_deploy_local_hands_each_node_its_csv_when_the_data_dir_has_one(wine: Path) -> None:
    configs = node_configs("vertical", parties=3, teacher_nodes=0, num_teachers=0, data_dir=wine)
    assert [c.split()[1] for c in configs] == [f"data-file='{wine / f'party{k}.csv'}'" for k in range(3)]


def test_the_summary_names_the_party_files_and_skips_absent_attacks(wine: Path) -> None:
    from rich.console import Console

    from simulations.vertical import summary_table

    split = {"aligned": 0.9, "active_only": 0.5, "passive_only_1": 0.7}
    results = {"val": split, "test": split, "label_dp_epsilon": float("inf"), "attack": {"passive1_x": 0.1}}
    console = Console(width=200, record=True)
    console.print(summary_table(_wine_config(wine), results))
    text = console.export_text()
    assert f"party files in {wine}, 3 parties" in text and "0.9000" in text
