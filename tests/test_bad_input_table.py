"""Bad site and party files, and bad command lines: one row per case (issue 24 §5-§7).

Reader rows expect a ``ValueError`` naming file, row, column or cell; command-line rows call the entry
point's ``main`` in process and expect one ``error:`` line on stderr, exit status 2 and no traceback. The
``slow`` rows run the same commands as real processes.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from clients.encoders import build_classifier
from clients.pate.site_files import main as export_main
from clients.pate.site_files import read_teacher_site
from clients.pate.student_model import main as student_main
from clients.pate.student_model import save_student
from clients.vertical.data import PartyData, make_vertical_split
from clients.vertical.party_csv import csv_settings, load_party_csv, read_party_csv
from clients.vertical.party_csv import main as transform_main
from clients.vertical.party_files import main as party_files_main
from clients.vertical.predict import main as vertical_predict_main
from protocol.codec import to_flat
from protocol.pate import ModelSpec
from protocol.vertical import DatasetConfig, ModelConfig, VerticalConfig, VerticalStrategyConfig
from simulations.deploy_local import main as deploy_main
from simulations.pate import cli as pate_cli
from simulations.report import main as report_main
from simulations.vertical import cli as vertical_cli
from simulations.vertical_preflight import check_parties

ROOT = Path(__file__).resolve().parents[1]
TEACHER = {"label-column": "label", "classes": "a,b"}
PARTY = """id,split,age,town,label
u1,train,10,north,yes
u2,train,,south,no
u3,train,30,,yes
u4,train,50,north,no
u5,val,20,east,yes
u6,test,,south,no
"""


def _site(cells: list[str], extra: str = "") -> str:
    """A teacher CSV of column ``x`` (``cells``) and alternating labels, with an optional other column."""
    header = "x,label" + ("," + extra.split("=")[0] if extra else "")
    values = extra.split("=")[1].split("|") if extra else []
    rows = [f"{c},{'ab'[i % 2]}" + (f",{values[i]}" if values else "") for i, c in enumerate(cells)]
    return "\n".join([header, *rows]) + "\n"


def _people(column: Callable[[int], str]) -> str:
    """A passive party of 40 train and 20 held-out users with a numeric ``fare`` and a column ``c``."""
    lines = ["id,split,fare,c"]
    for i in range(60):
        split = "train" if i < 40 else "val" if i < 50 else "test"
        lines.append(f"u{i},{split},{i % 7 * 1.5},{column(i)}")
    return "\n".join(lines) + "\n"


# (case id, file name, file content (text or bytes), settings, expected error substring)
SITE_CASES = [
    ("site 1e39 beyond float32", "f.csv", _site(["1", "1e39"]), TEACHER,
     "f.csv, row 3: column 'x' is '1e39', beyond float32's range"),
    ("site 1e300 beyond float32", "f.csv", _site(["1e300", "2"]), TEACHER, "row 2: column 'x' is '1e300', beyond"),
    ("site inf", "f.csv", _site(["1", "-inf"]), TEACHER, "row 3: column 'x' is '-inf', not a finite number"),
    ("site nan", "f.csv", _site(["nan", "2"]), TEACHER, "row 2: column 'x' is 'nan', not a finite number"),
    ("site text cell in numeric column", "f.csv", _site(["1", "2", "abc", "4"]), TEACHER,
     "row 4: column 'x' is 'abc', not a number, while 3 of its 4 filled cells are numbers"),
    ("site text cell declared categorical", "f.csv", _site(["1", "2", "abc", "4"]),
     {**TEACHER, "column-types": "x=numeric"}, "row 4: column 'x' is 'abc', not a finite number"),
    ("site undeclared text ID column", "f.csv", _site([str(i % 3) for i in range(30)],
                                                      "name=" + "|".join(f"n{i}" for i in range(30))),
     TEACHER, "column 'name' looks like free text or an ID (30 distinct values in 30 filled rows)"),
    ("site undeclared integer ID column", "f.csv", _site([str(i % 3) for i in range(30)],
                                                         "pid=" + "|".join(str(100 + i) for i in range(30))),
     TEACHER, "column 'pid' looks like a row ID, distinct integers in file order (30 distinct values"),
    ("site latin-1 csv", "f.csv", "x,label\n1,caf\xe9\n2,b\n".encode("latin-1"), TEACHER,
     "f.csv is not UTF-8 CSV text"),
    ("site empty npz", "f.npz", b"", {}, "f.npz: not a readable .npz archive (EOFError"),
    ("site truncated npz", "f.npz", b"PK\x03\x04garbage", {}, "f.npz: not a readable .npz archive"),
]


@pytest.mark.parametrize(("case", "name", "content", "settings", "expected"), SITE_CASES,
                         ids=[c[0] for c in SITE_CASES])
def test_a_bad_site_file_is_refused_naming_the_cell(tmp_path: Path, case: str, name: str, content: str | bytes,
                                                    settings: dict, expected: str) -> None:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as err:
        read_teacher_site(path, settings)
    assert expected in str(err.value)


def test_a_text_id_column_named_as_the_id_column_or_dropped_is_no_feature(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text(_site([str(i % 3) for i in range(30)], "name=" + "|".join(f"n{i}" for i in range(30))))
    for settings in ({**TEACHER, "id-column": "name"}, {**TEACHER, "drop-columns": "name"}):
        site = read_teacher_site(path, settings)
        assert site.x.shape == (30, 1) and [c for c, _ in site.schema.columns] == ["x"]


PARTY_CASES = [
    ("party 1e39 beyond float32", PARTY.replace("u5,val,20", "u5,val,1e39"), {},
     "a.csv, row 6: column 'age' is '1e39', beyond float32's range"),
    ("party 1e300 in train", PARTY.replace("u1,train,10", "u1,train,1e300"), {},
     "a.csv, row 2: column 'age' is '1e300', beyond"),
    ("party inf", PARTY.replace("u5,val,20", "u5,val,inf"), {}, "row 6: column 'age' is 'inf', not a finite"),
    ("party text cell in train rows", PARTY.replace("u4,train,50", "u4,train,twenty"), {},
     "a.csv, row 5: column 'age' is 'twenty', not a number, while 2 of its 3 filled cells are numbers"),
    ("party text cell in held-out rows", PARTY.replace("u5,val,20", "u5,val,abc"), {},
     "a.csv, row 6: column 'age' is 'abc', not a finite number"),
    ("party latin-1 csv", PARTY.replace("north", "n\xf6rth").encode("latin-1"), {}, "a.csv is not UTF-8 CSV text"),
]


@pytest.mark.parametrize(("case", "content", "settings", "expected"), PARTY_CASES, ids=[c[0] for c in PARTY_CASES])
def test_a_bad_party_file_is_refused_naming_the_cell(tmp_path: Path, case: str, content: str | bytes,
                                                     settings: dict, expected: str) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError) as err:
        load_party_csv(path, 0, csv_settings(path, {"classes": "no,yes", **settings}))
    assert expected in str(err.value)


@pytest.mark.parametrize(("case", "column", "settings", "expected"), [
    ("party integer row ID", lambda i: str(1000 + i), {}, "column 'c' looks like a row ID, distinct integers in file order (40 distinct values"),
    ("party row ID declared numeric is kept", lambda i: str(1000 + i), {"column-types": "c=numeric"}, None),
    ("party row ID dropped", lambda i: str(1000 + i), {"drop-columns": "c"}, None),
    ("party shuffled integers are a feature", lambda i: str((i * 37) % 61), {}, None),
], ids=lambda v: v if isinstance(v, str) else "")
def test_an_id_column_is_never_a_feature_unless_declared(tmp_path: Path, case: str, column: Callable[[int], str],
                                                         settings: dict, expected: str | None) -> None:
    path = tmp_path / "p.csv"
    path.write_text(_people(column))
    options = csv_settings(path, {"n-classes": "2", **settings})
    if expected is not None:
        with pytest.raises(ValueError, match=expected.replace("(", r"\(")):
            read_party_csv(path, 1, options)
        return
    _, transform = read_party_csv(path, 1, options)
    assert [c.name for c in transform.columns] == (["fare"] if "drop-columns" in settings else ["fare", "c"])


# -- command lines: one error: line, exit status 2 ------------------------------------------------------


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A party CSV with its saved transform, a PATE student model and a vertical party model whose
    metadata asks for ``hidden = 10**9``, and a good input array."""
    root = tmp_path_factory.mktemp("cli")
    (root / "a.csv").write_text(PARTY)
    load_party_csv(root / "a.csv", 0, csv_settings(root / "a.csv", {"classes": "no,yes"}), root)
    model = build_classifier((8,), 2, hidden=4)
    meta = save_student(model, root / "student", {"classes": [0, 1], "input_shape": [8],
                                                  "model": {**ModelSpec().__dict__, "hidden": 4}})
    big = json.loads(meta.read_text())
    big["model"]["hidden"] = 10**9
    (root / "big.json").write_text(json.dumps({**big, "weights": "student.pt"}))
    cfg = to_flat(VerticalConfig())
    torch.save({"config": {**cfg, "model.hidden": 10**9}, "input_shape": [8], "n_classes": 2, "role": "passive",
                "modules": {}, "prototypes": None, "valid": None}, root / "big.pt")
    np.save(root / "x.npy", np.zeros((3, 8), dtype=np.float32))
    (root / "bad.json").write_text("{not json")
    (root / "text.csv").write_text("id,split,age,town\nu9,test,abc,north\n")
    (root / "nocol.csv").write_text("id,split,age\nu9,test,3\n")
    (root / "unknown.json").write_text(json.dumps({"rows": 1}))
    for folder in ("empty", "broken"):
        (root / folder).mkdir()
    (root / "broken" / "cut.json").write_text('{"config": {')
    return {"root": root, "transform": root / "party0.features.json", "meta": meta}


RENAMED = "strategy.sigma was renamed: set strategy.sigma2 (the answer noise σ2 of GNMax / Confident-GNMax); "
"""The refusal of the earlier name of ``strategy.sigma2`` (issue 23 §1), before the value given."""


def _cli(files: dict[str, Path]) -> list[tuple[str, Callable, list[str], str]]:
    root, transform = files["root"], str(files["transform"])
    return [
        ("export --teacher-nodes 0", export_main, ["--teacher-nodes", "0", "--out", str(root / "e")],
         "need 1 <= teacher nodes <= 10 teachers, got 0"),
        ("export more nodes than teachers", export_main,
         ["--teacher-nodes", "5", "--num-teachers", "4", "--out", str(root / "e")], "<= 4 teachers, got 5"),
        ("export --num-teachers 0", export_main, ["--teacher-nodes", "1", "--num-teachers", "0",
                                                  "--out", str(root / "e")], "num_teachers=0: must be an integer"),
        ("export more teachers than samples", export_main,
         ["--teacher-nodes", "1", "--num-teachers", "5000", "--out", str(root / "e")],
         "num_teachers (5000) exceeds the"),
        ("export --query-fraction 1.5", export_main, ["--teacher-nodes", "1", "--query-fraction", "1.5",
                                                      "--out", str(root / "e")], "query_fraction=1.5: must be in"),
        ("export unwritable --out", export_main, ["--teacher-nodes", "1", "--out", "/proc/no/such"],
         "cannot write --out /proc/no/such"),
        ("transform missing column", transform_main,
         ["--transform", transform, "--csv", str(root / "nocol.csv"), "--out", str(root / "o.npy")],
         "nocol.csv: no column 'town'"),
        ("transform text cell", transform_main,
         ["--transform", transform, "--csv", str(root / "text.csv"), "--out", str(root / "o.npy")],
         "text.csv, row 2: column 'age' is 'abc', not a finite number"),
        ("transform not JSON", transform_main,
         ["--transform", str(root / "bad.json"), "--csv", str(root / "a.csv"), "--out", str(root / "o.npy")],
         "bad.json: not a saved feature transform"),
        ("transform file missing", transform_main,
         ["--transform", str(root / "none.json"), "--csv", str(root / "a.csv"), "--out", str(root / "o.npy")],
         "transform file " + str(root / "none.json") + " does not exist"),
        ("transform --out in a missing folder", transform_main,
         ["--transform", transform, "--csv", str(root / "a.csv"), "--out", str(root / "no" / "o.npy")],
         "output folder " + str(root / "no") + " of --out"),
        ("student predict hidden=10**9", student_main,
         ["predict", "--model", str(root / "big.json"), "--input", str(root / "x.npy")],
         "mlp encoder of input (8,): layers ['8x1000000000', '1000000000x64'] would hold"),
        ("vertical predict hidden=10**9", vertical_predict_main,
         ["--model", str(root / "big.pt"), "--inputs", str(root / "x.npy"), "--out", str(root / "o.npz")],
         "mlp encoder of input (8,): layers ['8x1000000000'"),
        ("vertical predict missing model", vertical_predict_main,
         ["--model", str(root / "none.pt"), "--inputs", str(root / "x.npy"), "--out", str(root / "o.npz")],
         "model file " + str(root / "none.pt") + " does not exist"),
        ("vertical predict not a model", vertical_predict_main,
         ["--model", str(root / "x.npy"), "--inputs", str(root / "x.npy"), "--out", str(root / "o.npz")],
         "is not a saved party model"),
        ("deploy_local --teacher-nodes 0", deploy_main,
         ["--method", "pate", "--teacher-nodes", "0", "--workdir", str(root / "d")],
         "--teacher-nodes 0: must be in [1, --num-teachers 20]"),
        ("deploy_local --parties 1", deploy_main, ["--parties", "1", "--workdir", str(root / "d")],
         "--parties 1: a vertical run needs >= 2 parties"),
        ("deploy_local --timeout -1", deploy_main, ["--method", "pate", "--timeout", "-1",
                                                    "--workdir", str(root / "d")], "--timeout -1.0: must be"),
        ("pate dataset=unknown", pate_cli, ["dataset=unknown"], "dataset=unknown: there is no dataset 'unknown'; "
         "the choices are digits, mnist1d, mnist5k (the files in conf/pate/dataset/)"),
        ("pate noise=unknown", pate_cli, ["dataset=digits", "noise=unknown"],
         "noise=unknown: there is no noise 'unknown'; the choices are digits, mnist1d, mnist5k"),
        ("pate misspelt key", pate_cli, ["strategy.sigmaa=3"], "strategy.sigmaa=3: there is no setting "
         "'strategy.sigmaa'; did you mean strategy.sigma2, strategy.sigma1, strategy.gamma?"),
        ("pate renamed key", pate_cli, ["strategy.sigma=40"], RENAMED + "got 40"),
        ("pate renamed key in a sweep", pate_cli, ["-m", "strategy.sigma=2,4"], RENAMED + "got 2,4"),
        ("pate renamed key added", pate_cli, ["+strategy.sigma=40"], RENAMED + "got 40"),
        ("pate misspelt group", pate_cli, ["strateg=gnmax"],
         "strateg=gnmax: there is no setting 'strateg'; did you mean strategy,"),
        ("pate wrong type", pate_cli, ["strategy.sigma2=abc"], "strategy.sigma2=abc: strategy.sigma2 must be of type "
         "float, got 'abc'"),
        ("pate wrong type in a sweep", pate_cli, ["-m", "strategy.sigma2=2,abc"],
         "strategy.sigma2=abc: strategy.sigma2 must be of type float, got 'abc'"),
        ("pate data.seed not an integer", pate_cli, ["data.seed=x"], "data.seed=x: data.seed must be of type int"),
        ("vertical dataset=unknown", vertical_cli, ["dataset=unknown"], "dataset=unknown: there is no dataset "
         "'unknown'; the choices are breast_cancer, caravan, digits, mnist5k, mnist5k_quarters"),
        ("vertical model=unknown", vertical_cli, ["model=rnn"], "model=rnn: there is no model 'rnn'; the choices "
         "are cnn, mlp (the files in conf/vertical/model/)"),
        ("vertical misspelt key", vertical_cli, ["strategy.lamm=0.5"], "strategy.lamm=0.5: there is no setting "
         "'strategy.lamm'; did you mean strategy.lam,"),
        ("vertical unknown section", vertical_cli, ["foo.bar=1"], "foo.bar=1: there is no setting 'foo.bar'; the "
         "settings at the top level are dataset, model, output_dir, seed, strategy, verbose"),
        ("vertical wrong type", vertical_cli, ["strategy.lam=x"], "strategy.lam=x: strategy.lam must be of type "
         "float, got 'x'"),
        ("report missing DIR", report_main, [str(root / "nowhere")], "DIR must exist, got " + str(root / "nowhere")),
        ("report malformed JSON", report_main, [str(root / "bad.json")], str(root / "bad.json")
         + ": not a readable JSON file (Expecting property name"),
        ("report JSON of no known kind", report_main, [str(root / "unknown.json")],
         str(root / "unknown.json") + ": not a results file this report knows"),
        ("report folder of broken results", report_main, [str(root / "broken")], "no results under "
         + str(root / "broken") + ": cut.json: not a readable JSON file"),
        ("report empty folder", report_main, [str(root / "empty")], "no results under " + str(root / "empty")),
        ("report unwritable --out", report_main, [str(ROOT / "tests" / "data" / "report" / "vertical_run"), "--out", "/proc/no/such"],
         "cannot write the report (--out /proc/no/such)"),
    ]


CLI_IDS = [case for case, *_ in _cli({"root": Path("r"), "transform": Path("t"), "meta": Path("m")})]


@pytest.mark.parametrize("case", CLI_IDS)
def test_a_bad_command_line_is_one_error_line_and_exit_2(files: dict[str, Path], capsys: pytest.CaptureFixture,
                                                        case: str) -> None:
    _, main, argv, expected = next(row for row in _cli(files) if row[0] == case)
    with pytest.raises(SystemExit) as ended:
        code = main(argv)
        raise SystemExit(code)  # student predict returns its status
    err = capsys.readouterr().err
    assert ended.value.code == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err
    assert not (files["root"] / "d").exists()  # deploy_local refused before creating anything


def test_an_output_name_without_suffix_is_written_as_given(files: dict[str, Path], capsys) -> None:
    root = files["root"]
    assert student_main(["predict", "--model", str(files["meta"]), "--input", str(root / "x.npy"),
                         "--output", str(root / "labels")]) == 0
    assert np.load(root / "labels").shape == (3,) and not (root / "labels.npy").exists()
    transform_main(["--transform", str(files["transform"]), "--csv", str(root / "a.csv"), "--out", str(root / "f")])
    assert np.load(root / "f").shape == (6, 5) and not (root / "f.npy").exists()


# -- a vertical simulation's parties, checked before any node starts ------------------------------------


def _renamed(party: PartyData) -> PartyData:
    """``party`` with every training ID changed (so that no other party holds it)."""
    return dataclasses.replace(party, ids=np.array([f"other-{u}" for u in party.ids.tolist()]))


def _moved_validation_user(party: PartyData) -> PartyData:
    """``party`` whose first validation user is replaced by one no other party declares."""
    return dataclasses.replace(party, val_ids=np.array(["someone-else", *party.val_ids.tolist()[1:]]))


# (case id, encoder, change of party 1, expected error substring)
PARTY_SET_CASES = [
    ("vertical 0 aligned users", "mlp", _renamed,
     "the parties share no training user, and split learning aligns on the users every party holds: "
     "party 0 holds"),
    ("vertical parties disagree on a validation user", "mlp", _moved_validation_user,
     "parties 0 and 1 hold different validation users: "),
    ("vertical class counts differ", "mlp", lambda p: dataclasses.replace(p, n_classes=3),
     "party 1 declares 3 classes, party 0 10"),
    ("vertical cnn1d encoder on 2-D features", "cnn1d", lambda p: p,
     "model.encoder='cnn1d' does not fit party 0 (active), whose features have shape (8, 4): cnn1d encoder "
     "needs 1-D inputs"),
]


@pytest.mark.parametrize(("case", "encoder", "change", "expected"), PARTY_SET_CASES,
                         ids=[c[0] for c in PARTY_SET_CASES])
def test_parties_a_vertical_run_cannot_use_are_refused_before_it_starts(
        case: str, encoder: str, change: Callable[[PartyData], PartyData], expected: str) -> None:
    split = make_vertical_split("digits", n_parties=2, aligned_fraction=0.1, seed=0)
    cfg = VerticalConfig(dataset=DatasetConfig(aligned_fraction=0.1), strategy=VerticalStrategyConfig())
    check_parties(cfg, split.parties)  # the bundled split itself passes
    cfg.model = ModelConfig(encoder=encoder)
    with pytest.raises(ValueError) as err:
        check_parties(cfg, [split.parties[0], change(split.parties[1])])
    assert expected in str(err.value)


@pytest.mark.slow
@pytest.mark.parametrize("module, case", [
    ("clients.pate.site_files", "export --teacher-nodes 0"),
    ("clients.vertical.party_csv", "transform not JSON"),
    ("clients.vertical.predict", "vertical predict hidden=10**9"),
    ("simulations.deploy_local", "deploy_local --parties 1"),
    ("simulations.pate", "pate dataset=unknown"),
    ("simulations.pate", "pate misspelt key"),
    ("simulations.pate", "pate renamed key"),
    ("simulations.vertical", "vertical wrong type"),
    ("simulations.report", "report malformed JSON"),
])
def test_a_bad_command_line_as_a_real_process(files: dict[str, Path], module: str, case: str) -> None:
    _, _, argv, expected = next(row for row in _cli(files) if row[0] == case)
    done = subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 2 and done.stderr.startswith("error: ") and expected in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def _npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as npz:
        return {k: npz[k] for k in npz.files}


@pytest.mark.slow
@pytest.mark.parametrize(("module", "case", "change", "overrides", "expected"), [
    ("simulations.vertical", "vertical 0 aligned users", {"ids": lambda a: np.char.add("other-", a["ids"])}, [],
     "the parties share no training user"),
    ("simulations.vertical", "vertical parties disagree on a validation user",
     {"val_ids": lambda a: np.concatenate([["someone-else"], a["val_ids"][1:]])}, [],
     "parties 0 and 1 hold different validation users: "),
    ("simulations.vertical", "vertical encoder does not fit", {}, ["model.encoder=cnn1d"],
     "model.encoder='cnn1d' does not fit party 0 (active), whose features have shape (8, 4)"),
    ("simulations.vertical", "vertical unknown +key", {}, ["+strategy.foo=1"],
     "unknown setting(s) strategy.foo; the strategy settings are epochs,"),
    ("simulations.pate", "pate unknown +key", {}, ["dataset=digits", "+strategy.foo=1"],
     "unknown setting(s) strategy.foo; the strategy settings are mechanism, sigma2,"),
])
def test_a_hydra_run_refused_before_it_starts_as_a_real_process(
        tmp_path: Path, module: str, case: str, change: dict, overrides: list[str], expected: str) -> None:
    folder = tmp_path / "parties"
    party_files_main(["--dataset", "digits", "--parties", "2", "--seed", "0", "--out", str(folder)])
    arrays = _npz(folder / "party1.npz")
    np.savez(folder / "party1.npz", **{**arrays, **{k: f(arrays) for k, f in change.items()}})
    data = [f"dataset.data_dir={folder}"] if module == "simulations.vertical" else []
    done = subprocess.run([sys.executable, "-m", module, *data, *overrides, f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and lines[-1].startswith("error: ") and expected in lines[-1], done.stderr
    assert "Traceback" not in done.stderr and sum(line.startswith("error:") for line in lines) == 1
