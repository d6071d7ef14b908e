"""PATE sites reading their own data: file formats, refused files, and runs over exported site files."""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from flwr.common.config import parse_config_args

from clients.pate.site_files import (
    export_bundled,
    main,
    read_student_site,
    read_teacher_site,
    site_shards,
    teacher_ranges,
)
from protocol.pate import SITE_DATA, DataSpec, ModelSpec, StudentSettings, parse_teacher_ids
from simulations.app import client_app
from simulations.deploy_local import COMPLETED, LocalDeployment, run_settings
from simulations.pate_config import PateConfig
from strategies.accounting import PrivacyLedger, PrivacyWarning
from strategies.ensemble_distillation import EnsembleDistillation
from strategies.fusion import GNMax
from tests.fake_grid import InProcessGrid

DATA = DataSpec(dataset="digits", num_teachers=6, seed=3)
FAST = ModelSpec(epochs=15, batch_size=32)
BUNDLED_NODES = {1: {"role": "teacher", "teachers": "0-2"}, 2: {"role": "teacher", "teachers": "3-5"},
                 3: {"role": "student"}}


@pytest.fixture(autouse=True)
def _node_output_under_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


@pytest.fixture(autouse=True)
def _quiet_edge_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        yield


@pytest.fixture(scope="module")
def npz_sites(tmp_path_factory) -> list[str]:
    return export_bundled(DATA, 2, tmp_path_factory.mktemp("npz"))


@pytest.fixture(scope="module")
def csv_sites(tmp_path_factory) -> list[str]:
    return export_bundled(DATA, 2, tmp_path_factory.mktemp("csv"), fmt="csv")


def node_config(text: str) -> dict[str, str]:
    """The dict a SuperNode makes of ``--node-config "k='v' k2='v2'"``."""
    return parse_config_args([text])


def run(tmp_path: Path, nodes: dict[int, dict], name: str, data: DataSpec = DATA,
        **kwargs) -> tuple[dict, InProcessGrid]:
    ledger = PrivacyLedger(tmp_path / f"{name}.json", mechanism="gnmax", delta=1e-5, epsilon_budget=500.0,
                           sigma2=2.0)
    strategy = EnsembleDistillation(
        mechanism=GNMax(sigma2=2.0), ledger=ledger, data=data, teacher_model=FAST, student_model=FAST,
        query_batch_size=40, max_queries=120, seed=0, student=StudentSettings(method="supervised", **kwargs))
    grid = InProcessGrid(client_app, nodes)
    return strategy.start(grid).report, grid


def sent_labels(grid: InProcessGrid) -> tuple[np.ndarray, np.ndarray]:
    msg = next(m for m in grid.sent if m.metadata.message_type == "train.student")
    return msg.content["labels"]["positions"].numpy(), msg.content["labels"]["labels"].numpy()


def test_exported_site_files_reproduce_the_bundled_run(tmp_path, npz_sites):
    # Prepare: the same three nodes, once rebuilding the bundled split, once reading their site files
    sites = {node: node_config(text) for node, text in zip((1, 2, 3), npz_sites, strict=True)}
    # Execute
    bundled, bundled_grid = run(tmp_path, BUNDLED_NODES, "bundled")
    site, site_grid = run(tmp_path, sites, "site", model_name="student")
    # Assert: same teachers (same shards, order and seeds), so the same votes, fused labels, ε and student
    for a, b in zip(sent_labels(bundled_grid), sent_labels(site_grid), strict=True):
        np.testing.assert_array_equal(a, b)
    assert site["epsilon_data_dependent"] == bundled["epsilon_data_dependent"]
    assert site["student"]["test_accuracy"] == bundled["student"]["test_accuracy"] > 0.5
    assert site["student"]["validation_accuracy"] == bundled["student"]["validation_accuracy"]
    assert [t["train_size"] for t in site["teachers"].values()] == [150] * 5 + [149]
    # what only the bundled rehearsal can measure (ground truth the sites do not hold) is NaN at a site
    assert bundled["student"]["fused_label_accuracy"] > 0.6
    assert math.isnan(site["student"]["fused_label_accuracy"])
    assert all(math.isnan(t["test_accuracy"]) for t in site["teachers"].values())
    meta = json.loads((tmp_path / "privkit-output" / "student.json").read_text())
    assert meta["classes"] == [str(c) for c in range(10)] and meta["input_shape"] == [8, 8]


def test_csv_sites_deal_their_own_shards_and_label_the_student(tmp_path, csv_sites):
    sites = {node: node_config(text) for node, text in zip((1, 2, 3), csv_sites, strict=True)}
    report, grid = run(tmp_path, sites, "csv")
    describe = grid.contexts  # every node read its CSV: flattened 64 numeric columns f0..f63
    assert all(Path(cfg["data-file"]).suffix == ".csv" for cfg in (c.node_config for c in describe.values()))
    positions, labels = sent_labels(grid)
    assert len(positions) == 120 and report["queries_checked"] == 120
    assert report["student"]["test_accuracy"] > 0.5
    assert [t["train_size"] for t in report["teachers"].values()] == [150] * 5 + [149]


def test_dataset_sites_runs_on_the_files_alone_and_refuses_a_node_without_one(tmp_path, csv_sites):
    # data.dataset='sites': nothing is checked against, or built from, a bundled dataset
    sites_only = DataSpec(dataset=SITE_DATA, num_teachers=6, seed=3)
    sites = {node: node_config(text) for node, text in zip((1, 2, 3), csv_sites, strict=True)}
    report, grid = run(tmp_path, sites, "sites", data=sites_only)
    assert report["queries_checked"] == 120 and report["student"]["test_accuracy"] > 0.5
    cfg = PateConfig(data=DataSpec(dataset=SITE_DATA, num_teachers=5000))  # more than any bundled set holds
    assert cfg.data.num_teachers == 5000
    with pytest.raises(ValueError, match="data.num_teachers=5000: the 899 teacher samples of digits leave none"):
        PateConfig(data=DataSpec(dataset="digits", num_teachers=5000))
    no_file = {**sites, 3: {"role": "student"}}
    with pytest.raises(RuntimeError, match="found 0; nodes that could not describe themselves: .*"
                                           "data.dataset='sites': every node brings its own data file, but this "
                                           "node's node_config has no 'data-file'"):
        run(tmp_path, no_file, "no-file", data=sites_only)


def test_csv_export_round_trips_the_npz_samples_exactly(npz_sites, csv_sites):
    npz = {**node_config(npz_sites[0])}
    from_csv = read_teacher_site(node_config(csv_sites[0])["data-file"], node_config(csv_sites[0]))
    from_npz = read_teacher_site(npz["data-file"])
    np.testing.assert_array_equal(from_csv.x, from_npz.x.reshape(len(from_npz.x), -1))
    np.testing.assert_array_equal(from_csv.y, from_npz.y)
    assert from_csv.classes == from_npz.classes == tuple(str(c) for c in range(10))
    student = read_student_site(node_config(csv_sites[2])["data-file"], node_config(csv_sites[2]))
    assert (len(student.pool_x), len(student.val_x), len(student.test_x)) == (359, 180, 359)


def test_node_dealt_shards_are_disjoint_seeded_and_even(npz_sites):
    site = read_teacher_site(node_config(npz_sites[0])["data-file"])
    unassigned = type(site)(site.x, site.y, site.classes, site.schema, None)
    shards = site_shards(unassigned, [0, 1, 2, 3], seed=4)
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(site.y)))
    assert sorted(len(s) for s in shards) == [112, 112, 113, 113]
    again = site_shards(unassigned, [0, 1, 2, 3], seed=4)
    other = site_shards(unassigned, [0, 1, 2, 3], seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(shards, again, strict=True))
    assert not np.array_equal(shards[0], other[0])
    # the file's own assignment is kept, in file order
    by_file = site_shards(site, [0, 1, 2], seed=4)
    assert [s[:2].tolist() for s in by_file] == [[0, 1], [150, 151], [300, 301]]
    with pytest.raises(ValueError, match=r"teachers \[2\], which this node does not host"):
        site_shards(site, [0, 1, 7], seed=4)


def test_export_command_writes_one_file_per_teacher_node(tmp_path, capsys):
    main(["--dataset", "mnist1d", "--teacher-nodes", "5", "--num-teachers", "10", "--mnist1d-samples", "400",
          "--out", str(tmp_path / "sites")])
    *lines, server = capsys.readouterr().out.splitlines()
    configs = [node_config(line.removeprefix('--node-config "').removesuffix('"')) for line in lines]
    assert '"pate.data.num_teachers=10 pate.data.seed=0"' in server
    assert [c["role"] for c in configs] == ["teacher"] * 5 + ["student"]
    hosted = [parse_teacher_ids(c["teachers"]) for c in configs[:5]]
    assert hosted == teacher_ranges(10, 5) == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    teacher_sizes = [len(read_teacher_site(c["data-file"]).y) for c in configs[:5]]
    student = read_student_site(configs[5]["data-file"])
    assert sum(teacher_sizes) + len(student.pool_x) + len(student.val_x) + len(student.test_x) == 400
    assert student.schema.text() == '{"array": [40]}'


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_features_numeric_and_categorical_with_ids(tmp_path):
    path = _write(tmp_path / "site.csv", "pid,age,colour,label\np1,30,red,yes\np2,41.5,blue,no\np3,29,red,no\n")
    settings = {"label-column": "label", "id-column": "pid", "classes": "no,yes"}
    site = read_teacher_site(path, settings)
    np.testing.assert_array_equal(site.x, [[30, 0, 1], [41.5, 1, 0], [29, 0, 1]])
    np.testing.assert_array_equal(site.y, [1, 0, 0])
    assert json.loads(site.schema.text()) == {"csv": [{"name": "age", "kind": "numeric"}, {
        "name": "colour", "kind": "categorical", "categories": ["blue", "red"]}], "input_shape": [3]}
    declared = read_teacher_site(path, {**settings, "categories": "colour=red|green|blue"})
    np.testing.assert_array_equal(declared.x[:, 1:], [[1, 0, 0], [0, 0, 1], [1, 0, 0]])
    assert declared.schema.input_shape == (4,)


def _npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


CLASSES = np.array(["a", "b"])
X = np.zeros((4, 3), dtype=np.float32)
Y = np.array([0, 1, 0, 1])
TEACHER_CSV = {"label-column": "label", "classes": "a,b"}


@pytest.mark.parametrize(("name", "make", "role", "settings", "expected"), [
    ("missing file", lambda d: d / "nowhere.npz", "teacher", {}, "does not exist"),
    ("empty csv", lambda d: _write(d / "f.csv", ""), "teacher", TEACHER_CSV, "is empty"),
    ("header only", lambda d: _write(d / "f.csv", "x,label\n"), "teacher", TEACHER_CSV, "no samples"),
    ("nan in npz", lambda d: _npz(d / "f.npz", x=np.full((4, 3), np.nan), y=Y, classes=CLASSES), "teacher", {},
     "x has NaN/inf in 4 rows"),
    ("nan in csv", lambda d: _write(d / "f.csv", "x,label\n1,a\nnan,b\n"), "teacher", TEACHER_CSV,
     "row 3: column 'x' is 'nan'"),
    ("missing value", lambda d: _write(d / "f.csv", "x,label\n1,a\n,b\n"), "teacher", TEACHER_CSV,
     "row 3: empty cell in column 'x'"),
    ("unknown class csv", lambda d: _write(d / "f.csv", "x,label\n1,a\n2,c\n"), "teacher", TEACHER_CSV,
     "row 3: unknown class 'c'"),
    ("row numbers count blank lines", lambda d: _write(d / "f.csv", "x,label\n1,a\n\n2,c\n"), "teacher",
     TEACHER_CSV, "row 4: unknown class 'c'"),
    ("unknown class npz", lambda d: _npz(d / "f.npz", x=X, y=np.array([0, 1, 2, 0]), classes=CLASSES),
     "teacher", {}, "unknown classes [2]"),
    ("unknown category", lambda d: _write(d / "f.csv", "x,label\nred,a\npink,b\n"), "teacher",
     {**TEACHER_CSV, "categories": "x=red|blue"}, "row 3: unknown category 'pink'"),
    ("no label-column key", lambda d: _write(d / "f.csv", "x,label\n1,a\n2,b\n"), "teacher", {},
     "needs node_config 'label-column'"),
    ("no label column", lambda d: _write(d / "f.csv", "x,y\n1,a\n2,b\n"), "teacher", TEACHER_CSV,
     "no label column 'label'"),
    ("missing array", lambda d: _npz(d / "f.npz", x=X, classes=CLASSES), "teacher", {}, "lacks ['y']"),
    ("object array", lambda d: _npz(d / "f.npz", x=X, y=Y, classes=np.array(["a", 1], dtype=object)),
     "teacher", {}, "store class names as str"),
    ("unknown format", lambda d: _write(d / "f.parquet", "x"), "teacher", {}, "unknown format '.parquet'"),
    ("labelled npz pool", lambda d: _npz(d / "f.npz", x=X, y=Y, val_x=X, val_y=Y, test_x=X, test_y=Y,
                                         classes=CLASSES), "student", {}, "pool must be unlabeled"),
    ("labelled csv pool", lambda d: _write(d / "f.csv", "x,label\n1,a\n"), "student",
     lambda d: {**TEACHER_CSV, "validation-file": str(_write(d / "v.csv", "x,label\n1,a\n")),
                "test-file": str(_write(d / "t.csv", "x,label\n1,b\n"))}, "it has the label column 'label'"),
    ("csv pool without held-out files", lambda d: _write(d / "f.csv", "x\n1\n"), "student", TEACHER_CSV,
     "needs node_config 'validation-file' and 'test-file'"),
    ("held-out columns differ", lambda d: _write(d / "f.csv", "x\n1\n"), "student",
     lambda d: {**TEACHER_CSV, "validation-file": str(_write(d / "v.csv", "z,label\n1,a\n")),
                "test-file": str(_write(d / "t.csv", "x,label\n1,b\n"))}, "feature columns ['z'] differ"),
    ("repeated ids", lambda d: _write(d / "f.csv", "id,x,label\nu,1,a\nu,2,b\n"), "teacher",
     {**TEACHER_CSV, "id-column": "id"}, "ID column 'id' is missing or repeats IDs"),
])
def test_bad_site_files_are_refused_naming_file_and_problem(tmp_path, name, make, role, settings, expected):
    path = make(tmp_path)
    settings = settings(tmp_path) if callable(settings) else settings
    reader = read_teacher_site if role == "teacher" else read_student_site
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        reader(path, settings)
    assert str(path.name) in str(err.value) and expected in str(err.value), str(err.value)


@pytest.mark.parametrize(("teacher_file", "expected"), [
    (lambda d: _npz(d / "t.npz", x=np.zeros((30, 5), np.float32), y=np.arange(30) % 10,
                    classes=np.array([str(c) for c in range(10)])), "on input_shape: [5] vs the student's [8, 8]"),
    (lambda d: _npz(d / "t.npz", x=np.zeros((30, 8, 8), np.float32), y=np.arange(30) % 2,
                    classes=np.array(["cat", "dog"])), "on classes: ['cat', 'dog'] vs the student's ['0', '1',"),
])
def test_run_refused_when_a_site_disagrees_with_the_student(tmp_path, npz_sites, teacher_file, expected):
    path = teacher_file(tmp_path)
    nodes = {1: {"role": "teacher", "teachers": "0-5", "data-file": str(path), "label-column": "label"},
             3: node_config(npz_sites[2])}
    with pytest.raises(RuntimeError, match="node 1 \\(teacher\\) disagrees with student node 3") as err:
        run(tmp_path, nodes, "refused")
    assert expected in str(err.value)


def test_student_whose_file_is_missing_stops_the_run_naming_the_file(tmp_path):
    nodes = {**BUNDLED_NODES, 3: {"role": "student", "data-file": str(tmp_path / "gone.npz")}}
    with pytest.raises(RuntimeError, match=r"one student node, found 0.*gone\.npz does not exist"):
        run(tmp_path, nodes, "missing")


def test_run_refused_when_csv_sites_name_their_columns_differently(tmp_path, csv_sites):
    teacher = node_config(csv_sites[0])
    renamed = Path(teacher["data-file"]).read_text().replace("f0,", "pixel0,", 1)
    teacher["data-file"] = str(_write(tmp_path / "renamed.csv", renamed))
    nodes = {1: {**teacher, "teachers": "0-5"}, 3: node_config(csv_sites[2])}
    with pytest.raises(RuntimeError, match='node 1 \\(teacher\\) disagrees with student node 3 on feature_schema: '
                       '{"csv": \\[{"name": "pixel0"'):
        run(tmp_path, nodes, "renamed")


@pytest.mark.slow
def test_sites_read_their_files_on_an_authenticated_tls_deployment(tmp_path):
    # real SuperLink + 3 SuperNodes (TLS, SuperNode authentication), each handed only its own site file
    t0 = time.monotonic()
    out = tmp_path / "out"
    configs = export_bundled(DataSpec(dataset="digits", num_teachers=6, seed=0), 2, tmp_path / "sites")
    configs[-1] += f" output-dir='{out}'"
    settings = run_settings("pate", out, parties=0, teacher_nodes=2, num_teachers=6, pate_overrides=(
        "strategy.query_batch_size=40", "strategy.max_queries=120", "strategy.epsilon_budget=100.0",
        "teacher.epochs=15", "federation.timeout_s=1200.0",  # 2 shared cores: a node may train for minutes
        # digits' noise group is written for 20 teachers (T = 16, σ1 = 12 do not fit 6: refused, issue 24 §4)
        "strategy.threshold=4.8", "strategy.sigma1=3.6", "strategy.sigma2=0.96"))
    with LocalDeployment(tmp_path, port=9420) as deployment:
        deployment.start_superlink()
        for k, config in enumerate(configs):
            deployment.start_supernode(f"supernode{k}", config)
        deployment.wait_online(len(configs))
        status = deployment.finish_run(deployment.start_run(settings), timeout=1500)
        log = deployment.log("flwr_run")
    print(f"wall time {time.monotonic() - t0:.0f} s")
    assert status == COMPLETED, log[-3000:]
    report = json.loads((out / "results.json").read_text())
    assert report["queries_checked"] == 120 and report["teachers_remaining"] == 6
    assert [t["train_size"] for t in report["teachers"].values()] == [150] * 5 + [149]
    # what needs ground truth the sites do not hold is "nan" (strict JSON)
    assert report["student"]["fused_label_accuracy"] == "nan"
    assert {t["test_accuracy"] for t in report["teachers"].values()} == {"nan"}
    # Confident-GNMax (T = 4.8 over 6 votes) answers the confident queries; self-training uses the rest
    assert report["answered"] == report["student"]["answered"] > 0
    assert report["student"]["test_accuracy"] > 0.2  # 10 classes
