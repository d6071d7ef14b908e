"""The machine's data cache: built once, shared by processes, atomic, checked on load."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.data import load_dataset, load_pate_data
from clients.data_cache import CACHE_DIR_ENV, cached_arrays, default_cache_dir, entry_name
from clients.pate.node import handle_describe, handle_prepare
from protocol.codec import to_record
from protocol.pate import DataSpec

WHAT = {"dataset": "toy", "seed": 3}


def _builder(calls: list[int], value: float = 1.0):
    def build() -> dict[str, np.ndarray]:
        calls.append(1)
        return {"x": np.full((4, 3), value, dtype=np.float32), "y": np.arange(4)}
    return build


def test_first_call_builds_and_stores_later_calls_read_it(tmp_path: Path) -> None:
    calls: list[int] = []
    first = cached_arrays(WHAT, _builder(calls), tmp_path)
    second = cached_arrays(WHAT, _builder(calls, value=2.0), tmp_path)
    assert calls == [1]
    np.testing.assert_array_equal(second["x"], first["x"])
    name = entry_name(WHAT)
    record = json.loads((tmp_path / f"{name}.json").read_text())
    assert record["what"] == WHAT and record["arrays"] == {"x": ["float32", [4, 3]], "y": ["int64", [4]]}
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.json", f"{name}.lock", f"{name}.npz"]


def test_the_key_decides_the_entry(tmp_path: Path) -> None:
    calls: list[int] = []
    cached_arrays(WHAT, _builder(calls), tmp_path)
    cached_arrays({**WHAT, "seed": 4}, _builder(calls), tmp_path)
    assert len(calls) == 2 and entry_name(WHAT) != entry_name({**WHAT, "seed": 4})
    assert entry_name({"b": 1, "a": 2}) == entry_name({"a": 2, "b": 1})  # canonical JSON


@pytest.mark.parametrize(("damage", "says"), [
    (lambda npz, rec: npz.write_bytes(npz.read_bytes()[:-7] + b"garbage"), "does not match the recorded"),
    (lambda npz, rec: rec.write_text(json.dumps({**json.loads(rec.read_text()), "what": {"seed": 9}})),
     "rebuilding it"),
    (lambda npz, rec: rec.write_text("{not json"), "unreadable"),
])
def test_a_damaged_entry_is_rebuilt_with_a_warning(tmp_path: Path, caplog, damage, says: str) -> None:
    calls: list[int] = []
    cached_arrays(WHAT, _builder(calls), tmp_path)
    name = entry_name(WHAT)
    damage(tmp_path / f"{name}.npz", tmp_path / f"{name}.json")
    with caplog.at_level(logging.WARNING, logger="clients.data_cache"):
        again = cached_arrays(WHAT, _builder(calls, value=5.0), tmp_path)
    assert calls == [1, 1] and says in caplog.text
    assert float(again["x"][0, 0]) == 5.0
    assert float(cached_arrays(WHAT, _builder(calls), tmp_path)["x"][0, 0]) == 5.0 and len(calls) == 2


def test_an_unwritable_folder_builds_in_memory(tmp_path: Path, caplog) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    calls: list[int] = []
    with caplog.at_level(logging.WARNING, logger="clients.data_cache"):
        arrays = cached_arrays(WHAT, _builder(calls), blocker / "cache")
    assert calls == [1] and arrays["x"].shape == (4, 3) and "is not usable" in caplog.text


def test_a_builder_must_return_named_arrays(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="must return a dict of numpy arrays, got list"):
        cached_arrays(WHAT, lambda: [np.zeros(2)], tmp_path)  # type: ignore[arg-type, return-value]


def _slow_build_in_process(folder: str, log: str) -> None:
    def build() -> dict[str, np.ndarray]:
        with open(log, "a") as handle:
            handle.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        return {"x": np.arange(10.0)}
    arrays = cached_arrays(WHAT, build, folder)
    assert arrays["x"].sum() == 45.0


def test_concurrent_processes_build_once_and_all_read_it(tmp_path: Path) -> None:
    log = tmp_path / "builds.log"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_slow_build_in_process, args=(str(tmp_path / "c"), str(log))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert [p.exitcode for p in procs] == [0, 0, 0]
    assert len(log.read_text().splitlines()) == 1  # one builder; the others waited and read its entry
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")]


def test_default_folder_follows_the_environment(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"
    monkeypatch.delenv(CACHE_DIR_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "flwr-privkit"


def test_datasets_and_splits_come_back_identical_from_the_cache(tmp_path: Path) -> None:
    built = load_dataset("mnist1d", seed=2, mnist1d_samples=400, cache_dir=str(tmp_path))
    read = load_dataset("mnist1d", seed=2, mnist1d_samples=400, cache_dir=str(tmp_path))
    np.testing.assert_array_equal(built.x, read.x)
    np.testing.assert_array_equal(built.y, read.y)
    args = ("digits", 1, 5, "dirichlet", 0.5, 0.2, 0.1, 0.2, 4000, 0)
    data, split = load_pate_data(*args, cache_dir=str(tmp_path))
    load_pate_data.cache_clear()  # the next call reads the entries, not this process's copy
    data2, split2 = load_pate_data(*args, cache_dir=str(tmp_path))
    assert data2 is not data
    for a, b in zip(split.teacher_shards, split2.teacher_shards, strict=True):
        np.testing.assert_array_equal(a, b)
    for name in ("query_pool", "validation", "test"):
        np.testing.assert_array_equal(getattr(split, name), getattr(split2, name))


def _context(node_config: dict) -> Context:
    return Context(run_id=1, node_id=1, node_config=node_config, state=RecordDict(), run_config={})


def _message(kind: str, spec: DataSpec) -> Message:
    TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0  # what a ServerApp has set
    return Message(RecordDict({"data": to_record(spec)}), dst_node_id=1, message_type=f"query.{kind}")


def test_describe_builds_nothing_and_the_student_prepares_into_its_cache(tmp_path: Path) -> None:
    spec = DataSpec(dataset="mnist1d", num_teachers=4, mnist1d_samples=100_000)  # a minute to generate
    cache = tmp_path / "node-cache"
    student = _context({"partition-id": 1, "num-partitions": 2, "cache-dir": str(cache)})
    start = time.perf_counter()
    reply = handle_describe(_message("describe", spec), student)
    assert time.perf_counter() - start < 5.0 and not cache.exists()  # described from the bundled shapes
    assert list(reply.content["role"]["input_shape"]) == [40] and reply.content["role"]["role"] == "student"
    small = DataSpec(dataset="mnist1d", num_teachers=4, mnist1d_samples=500)
    prepared = handle_prepare(_message("prepare", small), student).content["prepared"]
    assert prepared["pool_size"] == 100 and len(list(cache.glob("*.npz"))) == 2  # dataset and split
    teacher = _context({"partition-id": 0, "num-partitions": 2})
    with pytest.raises(ValueError, match="query.prepare goes to the student node; this node's role is 'teacher'"):
        handle_prepare(_message("prepare", small), teacher)
    with pytest.raises(ValueError, match="'cache-dir' must be a non-empty path, got ''"):
        handle_prepare(_message("prepare", small), _context({"partition-id": 1, "num-partitions": 2,
                                                               "cache-dir": ""}))
