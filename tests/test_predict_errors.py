"""``python -m clients.pate.student predict``: every bad input is one ``error: <what>`` line and exit 2."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clients.pate.student import train_student
from clients.pate.student_model import main, save_student
from protocol.pate import ModelSpec


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8), dtype=np.float32)
    model, _ = train_student(x, (x[:, 0, 0] > 0.5).astype(np.int64), x[:0], 2, ModelSpec(epochs=2), seed=0)
    return save_student(model, folder / "student", {"classes": [0, 1], "input_shape": [8, 8],
                                                     "model": ModelSpec(epochs=2).__dict__})


def _edit_meta(change: Callable[[dict], object]) -> Callable[[Path], None]:
    def edit(meta_path: Path) -> None:
        meta = json.loads(meta_path.read_text())
        change(meta)
        meta_path.write_text(json.dumps(meta))
    return edit


# (case, how to spoil the model copy, the input array or None for a spoiled input file, expected text)
GOOD_X = np.zeros((3, 8, 8), dtype=np.float32)
CASES: list[tuple[str, Callable[[Path], None] | None, object, str]] = [
    ("empty model file", lambda p: p.write_text(""), GOOD_X, "is empty"),
    ("model not JSON", lambda p: p.write_text("{not json"), GOOD_X, "is not JSON"),
    ("model JSON not an object", lambda p: p.write_text("[1, 2]"), GOOD_X, "must hold a JSON object, got list"),
    ("model JSON lacks keys", _edit_meta(lambda m: m.pop("classes")), GOOD_X, "lacks ['classes']"),
    ("foreign format", _edit_meta(lambda m: m.update(format="x")), GOOD_X, "is not a flwr-privkit student model"),
    ("weights path escapes", _edit_meta(lambda m: m.update(weights="../x.pt")), GOOD_X,
     "weights must name a file beside it"),
    ("weights missing", lambda p: p.with_suffix(".pt").unlink(), GOOD_X, "does not exist"),
    ("corrupt weights", lambda p: p.with_suffix(".pt").write_bytes(b"garbage"), GOOD_X,
     "is not a readable model"),
    ("edited input shape", _edit_meta(lambda m: m.update(input_shape=[4, 4])), np.zeros((3, 4, 4)),
     "does not fit the model"),
    ("mismatched weights (another class count)", _edit_meta(lambda m: m.update(classes=[0, 1, 2])), GOOD_X,
     "does not fit the model"),
    ("bad input_shape", _edit_meta(lambda m: m.update(input_shape=[8, -1])), GOOD_X,
     "input_shape must be a list of integers >= 1"),
    ("empty batch", None, np.zeros((0, 8, 8), dtype=np.float32), "input holds no samples (shape (0, 8, 8))"),
    ("complex samples", None, np.zeros((3, 8, 8), dtype=np.complex64), "input must be real numbers, got dtype complex64"),
    ("string samples", None, np.array([["a"] * 8] * 8)[None], "input must be real numbers"),
    ("wrong shape", None, np.zeros((3, 64), dtype=np.float32), "input must have shape (N, 8, 8), got (3, 64)"),
    ("NaN", None, np.full((3, 8, 8), np.nan, dtype=np.float32), "contain NaN or inf"),
    ("empty input file", None, b"", "is empty"),
    ("input not .npy", None, b"hello world", "is not a .npy array"),
]


@pytest.mark.parametrize(("case", "spoil", "x", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_error_line_and_exit_2(saved, tmp_path, capsys, case, spoil, x, expected) -> None:
    model = tmp_path / "student.json"
    shutil.copy(saved, model)
    shutil.copy(saved.with_suffix(".pt"), tmp_path / "student.pt")
    if spoil is not None:
        spoil(model)
    input_file = tmp_path / "x.npy"
    if isinstance(x, bytes):
        input_file.write_bytes(x)
    else:
        np.save(input_file, x)
    assert main(["predict", "--model", str(model), "--input", str(input_file)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and expected in err[0], err


def test_a_missing_output_folder_is_refused_before_predicting(saved, tmp_path, capsys) -> None:
    np.save(tmp_path / "x.npy", GOOD_X)
    out = tmp_path / "nowhere" / "y.npy"
    assert main(["predict", "--model", str(saved), "--input", str(tmp_path / "x.npy"), "--output", str(out)]) == 2
    assert f"error: output folder {out.parent} does not exist" in capsys.readouterr().err


def test_missing_input_and_model_files_are_named(saved, tmp_path, capsys) -> None:
    assert main(["predict", "--model", str(saved), "--input", str(tmp_path / "none.npy")]) == 2
    assert f"error: input file {tmp_path / 'none.npy'} does not exist" in capsys.readouterr().err
    np.save(tmp_path / "x.npy", GOOD_X)
    assert main(["predict", "--model", str(tmp_path / "none.json"), "--input", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err
    assert "error: model file" in err and "does not exist" in err
