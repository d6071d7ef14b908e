"""Run progress: the plain lines a log gets (phases, query batches with an ETA, node training, heartbeats),
the nodes' progress file, and training hooks that leave the training unchanged. No simulation runs."""

from __future__ import annotations

import io
import json
import re
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from rich.console import Console

from clients.pate.semi_supervised import FixMatchConfig, train_fixmatch
from clients.pate.teacher_ensemble import train_ensemble
from clients.progress_log import WorkMeter, format_duration, read_progress, with_progress_file
from protocol.pate import ModelSpec
from simulations.progress import ProgressReporter, clock_label
from strategies.ensemble_distillation import ProgressEvent


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def log_console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, width=300, force_terminal=False), buffer


def reporter(console: Console, clock: FakeClock, **kwargs) -> ProgressReporter:
    return ProgressReporter(console, poll_s=0, clock=clock, **kwargs)


def lines(buffer: io.StringIO) -> list[str]:
    return buffer.getvalue().splitlines()


def test_a_string_console_is_not_a_terminal(monkeypatch):
    for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "FORCE_TERMINAL"):
        monkeypatch.delenv(name, raising=False)
    assert not ProgressReporter(Console(file=io.StringIO()), poll_s=0).live


def test_a_run_prints_a_line_per_phase_start_and_end_and_per_query_batch():
    # Arrange
    console, buffer = log_console()
    clock = FakeClock()
    # Act: the phases as simulations.pate.run and the strategy drive them
    with reporter(console, clock, max_queries=384, query_batch_size=128,
                  details={"teachers": "20 teachers x 5 epochs on 2 teacher nodes"}) as progress:
        progress.phase("startup", "Flower simulation engine")
        clock.now += 12
        progress.on_event(ProgressEvent("teacher training"))
        clock.now += 60
        progress.on_event(ProgressEvent("querying"))
        for batch in (1, 2, 3):
            clock.now += 10
            progress.on_event(ProgressEvent("queries", 128 * batch, 120 * batch, 1000, 0.25 * batch))
        clock.now += 1
        progress.on_event(ProgressEvent("student training", 384, 360, 1000, 0.75))
        clock.now += 20
        progress.on_event(ProgressEvent("done", 384, 360, 1000, 0.75))
    out = lines(buffer)
    # Assert
    assert out[0] == "[ 0:00] startup start · Flower simulation engine"
    assert out[1] == "[ 0:12] startup done in 12s"
    assert out[2] == "[ 0:12] teachers start · 20 teachers x 5 epochs on 2 teacher nodes"
    assert out[3] == "[ 1:12] teachers done in 1m00s"
    assert out[4] == ("[ 1:12] queries start · the student's pool, capped at 384, batches of 128; ETAs are "
                      "upper bounds (≤): the privacy budget may stop the phase sooner")
    assert out[5] == ("[ 1:22] queries · 128/384 checked (33%), 120 answered, ε 0.250, 10s elapsed, "
                      "ETA ≤ 20s")
    assert out[6] == ("[ 1:32] queries · 256/384 checked (67%), 240 answered, ε 0.500, 20s elapsed, "
                      "ETA ≤ 10s")
    assert out[7] == "[ 1:42] queries · 384/384 checked (100%), 360 answered, ε 0.750, 30s elapsed"
    assert out[8] == "[ 1:43] queries done in 31s · 384/384 checked, 360 answered, ε 0.750"
    assert out[9] == "[ 1:43] student start · training on 360 answered queries"
    assert out[10] == "[ 2:03] student done in 20s"
    assert len(out) == 11


def test_query_eta_is_against_the_pool_and_says_when_the_budget_stopped_it():
    # Arrange
    console, buffer = log_console()
    clock = FakeClock()
    # Act
    with reporter(console, clock) as progress:
        progress.on_event(ProgressEvent("querying"))
        clock.now += 4
        progress.on_event(ProgressEvent("queries", 100, 90, 1000, 1.5))
        progress.on_event(ProgressEvent("student training", 100, 90, 1000, 2.0))
    out = "\n".join(lines(buffer))
    # Assert: 900 queries left at 25 per second; the budget ended the phase before the pool
    assert "100/1000 checked (10%), 90 answered, ε 1.500, 4s elapsed, ETA ≤ 36s" in out
    assert "queries done in 4s · 100/1000 checked, 90 answered, ε 1.500 (stopped early: privacy budget " \
           "reached)" in out


def test_a_resumed_run_takes_its_rate_from_this_runs_batches_only():
    # Arrange: 1000 queries were paid for by an earlier run
    console, buffer = log_console()
    clock = FakeClock()
    with reporter(console, clock, query_batch_size=100) as progress:
        # Act
        progress.on_event(ProgressEvent("querying", 1000, 950))
        clock.now += 10
        progress.on_event(ProgressEvent("queries", 1100, 1040, 2000, 1.0))
    out = buffer.getvalue()
    # Assert
    assert "resuming after 1000 checked" in out
    assert "1100/2000 checked (55%), 1040 answered, ε 1.000, 10s elapsed, ETA ≤ 1m30s" in out


def test_without_a_querying_event_the_rate_starts_at_the_first_batch():
    console, buffer = log_console()
    clock = FakeClock()
    with reporter(console, clock, query_batch_size=100) as progress:
        clock.now += 10
        progress.on_event(ProgressEvent("queries", 1100, 1040, 2000, 1.0))
        clock.now += 10
        progress.on_event(ProgressEvent("queries", 1200, 1140, 2000, 1.1))
    out = lines(buffer)
    assert out[1] == "[ 0:10] queries · 1100/2000 checked (55%), 1040 answered, ε 1.000, 0s elapsed"
    assert out[2] == "[ 0:20] queries · 1200/2000 checked (60%), 1140 answered, ε 1.100, 10s elapsed, ETA ≤ 1m20s"
    assert "resuming" not in out[0]


def test_a_non_private_run_shows_infinite_epsilon():
    console, buffer = log_console()
    with reporter(console, FakeClock()) as progress:
        progress.on_event(ProgressEvent("queries", 10, 10, 10, float("inf")))
    assert "ε ∞ (non-private)" in buffer.getvalue()


def test_node_training_lines_sum_the_nodes_with_the_longest_eta_and_are_throttled():
    # Arrange
    console, buffer = log_console()
    clock = FakeClock()
    base = {"task": "teachers", "unit": "teacher-epochs", "total": 1000}
    # Act
    with reporter(console, clock, every_s=15) as progress:
        progress.on_event(ProgressEvent("teacher training"))
        progress.on_node({**base, "node": "0", "event": "note", "message": "preparing data for 10 teachers"})
        progress.on_node({**base, "node": "0", "event": "begin", "done": 0,
                          "message": "training 10 teachers x 100 epochs"})
        clock.now += 5
        progress.on_node({**base, "node": "0", "event": "progress", "done": 200, "eta_s": 20.0})
        progress.on_node({**base, "node": "1", "event": "progress", "done": 100, "eta_s": 45.0})
        clock.now += 5
        progress.on_node({**base, "node": "0", "event": "progress", "done": 400, "eta_s": 15.0})
        clock.now += 10
        progress.on_node({**base, "node": "1", "event": "progress", "done": 400, "eta_s": 30.0})
        progress.on_node({**base, "node": "1", "event": "end", "done": 1000, "message": "done in 55s"})
    out = lines(buffer)
    # Assert
    assert "[ 0:00] teachers · node 0: preparing data for 10 teachers" in out
    assert "[ 0:00] teachers · node 0: training 10 teachers x 100 epochs" in out
    assert "[ 0:05] teachers · 200/1000 teacher-epochs (20%) on 1 node, ETA 20s" in out
    assert not any(line.startswith("[ 0:10] teachers · 600/") for line in out)  # within 15 s: held back
    # node 0 last said 15 s at 0:10 (5 s left by 0:20); node 1 says 30 s now: the phase ends last with it
    assert "[ 0:20] teachers · 800/2000 teacher-epochs (40%) on 2 nodes (node 0 40%, node 1 40%), ETA 30s" in out
    assert "[ 0:20] teachers · node 1: done in 55s" in out
    assert out[-1] == "[ 0:20] teachers done in 20s"


def test_a_heartbeat_appears_after_silence_with_the_eta_counted_down():
    # Arrange
    console, buffer = log_console()
    clock = FakeClock()
    with reporter(console, clock, heartbeat_s=30) as progress:
        progress.on_event(ProgressEvent("querying"))
        clock.now += 10
        progress.on_event(ProgressEvent("queries", 100, 100, 1000, 0.5))  # ETA ≤ 1m30s
        # Act
        clock.now += 29
        progress.tick()
        silent = len(lines(buffer))
        clock.now += 1
        progress.tick()
        progress.tick()
    out = lines(buffer)
    # Assert: one heartbeat, at 30 s of silence
    assert len(out) == silent + 2  # the heartbeat and the phase's end
    assert out[silent] == "[ 0:40] queries · still running, 40s in this phase, ETA ≤ 1m00s"


def test_a_driver_phase_reports_its_own_progress_with_an_eta():
    # Arrange: the data preparation another module runs in the driver before the simulation
    console, buffer = log_console()
    clock = FakeClock()
    with reporter(console, clock, every_s=15) as progress:
        # Act
        progress.phase("data", "MNIST-1D, 100000 signals")
        clock.now += 10
        progress.update(25_000, 100_000)
        clock.now += 5
        progress.update(40_000)  # within 15 s of the last line: held back
        clock.now += 15
        progress.update(100_000, detail="cached")
        progress.done("100000 signals")
    out = lines(buffer)
    # Assert
    assert out == [
        "[ 0:00] data start · MNIST-1D, 100000 signals",
        "[ 0:10] data · 25000/100000 (25%), 10s elapsed, ETA 30s",
        "[ 0:30] data · 100000/100000 (100%), cached, 30s elapsed, ETA 0s",
        "[ 0:30] data done in 30s · 100000 signals",
    ]


def test_an_exception_says_which_phase_stopped():
    console, buffer = log_console()
    clock = FakeClock()
    with pytest.raises(RuntimeError), reporter(console, clock) as progress:
        progress.on_event(ProgressEvent("teacher training"))
        clock.now += 7
        raise RuntimeError("node 3 failed")
    assert lines(buffer)[-1] == "[ 0:07] teachers stopped after 7s (RuntimeError)"


def test_on_a_terminal_the_bar_stays_and_no_plain_lines_are_printed():
    # Arrange
    buffer = io.StringIO()
    console = Console(file=buffer, width=120, force_terminal=True)
    # Act
    with ProgressReporter(console, poll_s=0) as progress:
        progress.phase("startup")
        progress.on_event(ProgressEvent("queries", 128, 120, 1000, 0.25))
        progress.on_event(ProgressEvent("student training", 128, 120, 1000, 0.25))
        progress.on_node({"task": "student", "node": "2", "event": "progress", "done": 5, "total": 10,
                          "unit": "steps", "eta_s": 3.0})
    text = re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", buffer.getvalue())  # without the terminal's escapes
    # Assert: a row per phase, the queries' row kept with its count; no plain lines
    assert re.search(r"queries .* 128/1000 +answered   120  ε 0\.250", text)
    assert re.search(r"student .* 5/10 +steps on 1 node, ETA 3s", text)
    assert "checked (13%)" not in text and "[ 0:00]" not in text


def test_the_background_thread_follows_the_node_file(tmp_path):
    # Arrange: a node's records arrive in the file while the reporter polls it
    console, buffer = log_console()
    path = tmp_path / "nodes.jsonl"
    record = {"task": "student", "node": "2", "event": "note", "message": "preparing data"}
    # Act
    with ProgressReporter(console, poll_s=0.01) as progress:
        progress.follow(path)
        path.write_text(json.dumps(record) + "\n")
        for _ in range(500):
            if "preparing data" in buffer.getvalue():
                break
            threading.Event().wait(0.01)
    # Assert
    assert re.search(r"\] student · node 2: preparing data$", buffer.getvalue(), re.M)


# -- the node side ---------------------------------------------------------------------------------------


def test_a_meter_logs_begin_throttled_progress_with_an_eta_and_end(caplog):
    # Arrange
    clock = FakeClock()
    meter = WorkMeter("teachers", "teacher-epochs", every_s=5, clock=clock)
    # Act
    with caplog.at_level("INFO", logger="flwr_privkit.progress"):
        meter.note("preparing data")
        clock.now += 3
        meter.begin(100, "training")
        for done in range(1, 101):
            clock.now += 1
            meter(done)
        meter.finish()
    records = [r.privkit_progress for r in caplog.records]
    # Assert: the first unit, then one every 5 s, the last unit, and the end; the ETA at the rate after the
    # first unit
    assert [r["event"] for r in records][:3] == ["note", "begin", "progress"]
    assert [r["done"] for r in records if r["event"] == "progress"] == [1, *range(6, 100, 5), 100]
    assert records[-1]["event"] == "end" and records[-1]["message"] == "done in 1m40s"
    halfway = next(r for r in records if r["done"] == 51)
    assert halfway["eta_s"] == pytest.approx(49.0) and halfway["elapsed_s"] == pytest.approx(51.0)
    assert caplog.records[2].getMessage() == "teachers: 1/100 teacher-epochs (1%)"  # no rate from one unit
    assert caplog.records[3].getMessage() == "teachers: 6/100 teacher-epochs (6%), ETA 1m34s"


def test_a_handler_writes_its_own_threads_records_to_the_file_and_the_reporter_shows_them(tmp_path):
    # Arrange
    path = tmp_path / "progress.jsonl"
    other = threading.Thread(target=lambda: WorkMeter("teachers", "x").note("from another thread"))

    def handler(msg, context):
        meter = WorkMeter("teachers", "teacher-epochs")
        meter.note("preparing data for 2 teachers")
        other.start()
        other.join()
        meter.begin(10, "training 2 teachers x 5 epochs")
        meter(10)
        meter.finish()
        return "reply"

    wrapped = with_progress_file(handler, path)
    context = SimpleNamespace(node_config={"partition-id": 1}, node_id=123456789)
    # Act
    assert wrapped("msg", context) == "reply"
    WorkMeter("teachers", "x").note("after the handler")  # no file handler attached any more
    records, offset = read_progress(path)
    console, buffer = log_console()
    with reporter(console, FakeClock()) as progress:
        progress.phase("teachers")
        progress.follow(path)
        progress.tick()
    # Assert
    assert [r["event"] for r in records] == ["note", "begin", "progress", "end"]
    assert {r["node"] for r in records} == {"1"} and offset == path.stat().st_size
    assert "[ 0:00] teachers · node 1: preparing data for 2 teachers" in lines(buffer)
    assert "[ 0:00] teachers · 10/10 teacher-epochs (100%) on 1 node, ETA 0s" in lines(buffer)


def test_read_progress_leaves_a_partial_line_for_later_and_skips_garbage(tmp_path):
    path = tmp_path / "p.jsonl"
    assert read_progress(path) == ([], 0)
    path.write_bytes(b'{"event": "note"}\nnot json\n[1]\n{"event": "be')
    records, offset = read_progress(path)
    assert records == [{"event": "note"}] and offset == len(b'{"event": "note"}\nnot json\n[1]\n')
    with open(path, "ab") as f:
        f.write(b'gin"}\n')
    assert read_progress(path, offset) == ([{"event": "begin"}], path.stat().st_size)


def test_durations_and_stamps():
    assert [format_duration(s) for s in (0, 42.4, 185, 3720, float("nan"))] == ["0s", "42s", "3m05s",
                                                                                "1h02m", "?"]
    assert [clock_label(s) for s in (0, 112, 3723)] == ["[ 0:00]", "[ 1:52]", "[1:02:03]"]


# -- the training hooks change nothing -------------------------------------------------------------------


def test_teacher_ensemble_progress_counts_teacher_epochs_and_leaves_the_weights_unchanged():
    # Arrange: 3 teachers, two shard sizes (two chunks), 3 epochs
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 8)).astype(np.float32), rng.integers(0, 3, 40)
    shards = [np.arange(0, 12), np.arange(12, 24), np.arange(24, 37)]
    spec = ModelSpec(encoder="mlp", hidden=8, feature_dim=8, epochs=3, batch_size=8, lr=0.01, augment_shift=0)
    calls: list[tuple[int, int]] = []
    # Act
    plain = train_ensemble(x, y, shards, [0, 1, 2], 3, spec, data_seed=1, chunk=2)
    followed = train_ensemble(x, y, shards, [0, 1, 2], 3, spec, data_seed=1, chunk=2,
                              progress=lambda done, total: calls.append((done, total)))
    # Assert
    assert calls == [(2, 9), (4, 9), (6, 9), (7, 9), (8, 9), (9, 9)]
    for a, b in zip(plain.chunks, followed.chunks, strict=True):
        assert a.teacher_ids == b.teacher_ids
        assert all(torch.equal(a.params[k], b.params[k]) for k in a.params)


def test_fixmatch_progress_counts_every_step_and_leaves_the_model_unchanged():
    # Arrange
    rng = np.random.default_rng(1)
    xl, yl = rng.normal(size=(16, 12)).astype(np.float32), rng.integers(0, 2, 16)
    xu = rng.normal(size=(40, 12)).astype(np.float32)
    config = FixMatchConfig(epochs=2, batch_size=8, mu=2, warmup_epochs=1, ema_decay=0.5)
    calls: list[tuple[int, int]] = []

    def model() -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(12, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))

    plain, followed = model(), model()
    # Act
    train_fixmatch(plain, xl, yl, xu, config, seed=3)
    stats = train_fixmatch(followed, xl, yl, xu, config, seed=3, progress=lambda d, t: calls.append((d, t)))
    # Assert: 2 warm-up steps + 2 epochs x 3 steps
    assert calls == [(d, stats.steps) for d in range(1, 9)] and stats.steps == 8
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), followed.state_dict().values(),
                                                 strict=True))


def test_a_slow_first_unit_does_not_set_the_eta():
    # Arrange: the first epoch pays for a warm-up (60 s), the others take 1 s each
    clock = FakeClock()
    meter = WorkMeter("student", "epochs", every_s=0, clock=clock)
    seen: list[float | None] = []
    meter.begin(10)
    # Act
    for done in range(1, 4):
        clock.now += 60 if done == 1 else 1
        meter(done)
        seen.append(meter._eta(clock.now))
    # Assert
    assert seen == [None, 8.0, 7.0]
