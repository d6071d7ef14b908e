"""Live progress of a PATE run: a rich progress bar on a terminal, plain flushed lines in a log.

:class:`ProgressReporter` shows the run's phases (``startup``, ``data``, ``teachers``, ``queries``,
``student``) as they go. On a terminal (``console.is_terminal``) it draws a rich progress bar per
phase, each row kept with its final count and wall time. Anywhere else (a CI log, ``| tee``, a file) a
bar would only appear at the end, so it prints plain lines instead, each flushed at once and stamped
with the run's elapsed time (``[m:ss]``):

- a line when a phase starts and when it ends, with its wall time;
- a line per query batch: queries checked / the pool (or the ``max_queries`` cap), answered, ε so far,
  elapsed, and ``ETA ≤ …`` (the rate so far against what is left of the pool: the privacy budget may
  stop the phase sooner);
- during teacher and student training, which run on the nodes, a line every ``every_s`` seconds with
  the nodes' progress and an ETA (the nodes report through ``clients.progress_log``; :meth:`follow`
  reads the file the simulation's nodes write);
- a heartbeat when nothing was printed for ``heartbeat_s`` seconds: the phase, its time so far and the
  last ETA, counted down.

Usage (``simulations.pate.run`` does this)::

    with ProgressReporter(console, max_queries=2000, query_batch_size=128) as reporter:
        reporter.follow(progress_file)       # what the simulated nodes report
        reporter.phase("data", "MNIST-1D, 100 000 signals")   # a phase run in the driver ...
        reporter.update(40_000, 100_000)     # ... optionally how far it is (gives an ETA)
        reporter.done("cached in data/")     # ... and its end (prints its wall time)
        run_simulation(on_progress=reporter.on_event)   # the strategy's ProgressEvents

Public methods: :meth:`phase`, :meth:`update`, :meth:`done` for a phase the caller runs itself;
:meth:`on_event` for the strategy's :class:`~strategies.ensemble_distillation.ProgressEvent`;
:meth:`on_node` and :meth:`follow` for the nodes' reports; :meth:`tick` (the background thread calls it
every ``poll_s`` seconds: reads the followed files, prints a heartbeat when due). A new phase ends the
one before it; leaving the ``with`` block ends the last one (or says that it stopped, on an exception).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from clients.progress_log import format_duration, read_progress
from strategies.ensemble_distillation import ProgressEvent

PHASE_OF_EVENT = {"teacher training": "teachers", "querying": "queries", "queries": "queries",
                  "student training": "student"}
"""The reporter's phase name for each :class:`ProgressEvent` phase (``done`` ends the run)."""


def clock_label(seconds: float) -> str:
    """``[ 1:52]``, ``[1:02:03]``: the line stamp for ``seconds`` since the run started."""
    s = max(0, int(seconds))
    text = f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    return f"[{text:>5}]"


def format_epsilon(epsilon: float) -> str:
    """ε to three decimals, or ``∞ (non-private)``."""
    return f"{epsilon:.3f}" if math.isfinite(epsilon) else "∞ (non-private)"


class ProgressReporter:
    """Shows a run's phases live; see the module docstring for what it prints where.

    Parameters
    ----------
    console : Console
        Where to write; ``console.is_terminal`` picks the rich bar or the plain lines.
    max_queries : int, optional
        The query phase's cap (None or 0: the whole pool), for its progress and ETA.
    query_batch_size : int, optional
        Queries per batch, for the query phase's description.
    details : mapping, optional
        A phase's description when an event starts it (``{"teachers": "250 teachers on 2 nodes"}``).
    every_s : float (default: 15.0)
        Least seconds between two lines of one phase's node (or :meth:`update`) progress.
    heartbeat_s : float (default: 30.0)
        Seconds without a line after which a heartbeat is printed (0: never).
    poll_s : float (default: 1.0)
        Seconds between two :meth:`tick` calls of the background thread (0: no thread).
    clock : callable (default: time.monotonic)
        Seconds, for elapsed times and ETAs.
    """

    def __init__(
        self,
        console: Console,
        *,
        max_queries: int | None = None,
        query_batch_size: int | None = None,
        details: Mapping[str, str] | None = None,
        every_s: float = 15.0,
        heartbeat_s: float = 30.0,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.console = console
        self.max_queries = max_queries or None
        self.query_batch_size = query_batch_size
        self.details = dict(details or {})
        self.every_s = every_s
        self.heartbeat_s = heartbeat_s
        self.poll_s = poll_s
        self._clock = clock
        self._lock = threading.RLock()
        self._t0 = clock()
        self._last_line = self._t0
        self._phase: str | None = None
        self._phase_start = self._t0
        self._done = 0
        self._total: int | None = None
        self._last_update_line = -math.inf
        self._eta: tuple[float, float] | None = None  # (seconds left, when estimated)
        self._event: ProgressEvent | None = None  # the last query event
        self._first_checked: int | None = None
        self._nodes: dict[tuple[str, str], tuple[dict[str, Any], float]] = {}
        self._last_node_line: dict[str, float] = {}
        self._files: dict[str, int] = {}
        self._bar: Progress | None = None
        self._task: TaskID | None = None  # the current phase's row of the bar
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------

    @property
    def live(self) -> bool:
        """True on a terminal: a rich bar rather than plain lines."""
        return bool(self.console.is_terminal)

    def __enter__(self) -> ProgressReporter:
        if self.live:
            columns = (TextColumn("[bold]{task.fields[phase]:<9}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[info]}", markup=False), TimeElapsedColumn())
            self._bar = Progress(*columns, console=self.console, transient=False)
            self._bar.start()
        if self.poll_s > 0:
            self._thread = threading.Thread(target=self._loop, name="privkit-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._poll_files()
        with self._lock:
            if self._phase is not None:
                if exc_type is None:
                    self.done()
                else:
                    self._say(f"{self._phase} stopped after {format_duration(self._since_phase())} "
                              f"({exc_type.__name__})", on_terminal=True)
                    self._phase = None
            if self._bar is not None:
                self._bar.stop()

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.tick()

    # -- phases the caller runs ---------------------------------------------------------------------

    def phase(self, name: str, detail: str = "", total: int | None = None) -> None:
        """Start phase ``name`` (ending the current one); ``total`` units if known (see :meth:`update`)."""
        with self._lock:
            if self._phase is not None:
                self.done()
            self._phase, self._phase_start = name, self._clock()
            self._done, self._total, self._eta = 0, total, None
            self._last_update_line = -math.inf
            self._say(f"{name} start" + (f" · {detail}" if detail else ""))
            if self._bar is not None:
                self._task = self._bar.add_task(name, total=total, phase=name, info=_short(detail))

    def update(self, done: int, total: int | None = None, detail: str = "") -> None:
        """``done`` of ``total`` units of the current phase are finished: a line (at most every ``every_s``
        seconds) with the share and an ETA at the rate so far."""
        with self._lock:
            if total is not None:
                self._total = total
            self._done = done
            now = self._clock()
            elapsed = now - self._phase_start
            eta = elapsed * (self._total - done) / done if self._total and done > 0 else None
            if eta is not None:
                self._eta = (eta, now)
            text = f"{done}/{self._total}" if self._total else str(done)
            share = f" ({100 * done / self._total:.0f}%)" if self._total else ""
            tail = f", ETA {format_duration(eta)}" if eta is not None else ""
            info = (f"{detail}, " if detail else "") + f"{format_duration(elapsed)} elapsed" + tail
            self._show(completed=done, total=self._total, info=info)
            if now - self._last_update_line >= self.every_s or (self._total and done >= self._total):
                self._last_update_line = now
                self._say(f"{self._phase} · {text}{share}, {info}")

    def done(self, detail: str = "") -> None:
        """End the current phase: a line with its wall time (and ``detail``)."""
        with self._lock:
            if self._phase is None:
                return
            self._say(f"{self._phase} done in {format_duration(self._since_phase())}"
                      + (f" · {detail}" if detail else ""))
            if self._bar is not None and self._task is not None:
                task = next(t for t in self._bar.tasks if t.id == self._task)
                if task.total is None:  # a phase of unknown size shows full when it ends
                    full = max(1.0, task.completed)
                    self._bar.update(self._task, total=full, completed=full)
                if detail and not task.fields.get("info"):  # else the row keeps its last counts
                    self._bar.update(self._task, info=_short(detail))
                self._bar.stop_task(self._task)
            self._phase, self._eta, self._task = None, None, None

    # -- the strategy's events ----------------------------------------------------------------------

    def on_event(self, event: ProgressEvent) -> None:
        """Follow the strategy's :class:`ProgressEvent` (its ``on_progress`` callback)."""
        self._poll_files()  # the nodes' last reports of the phase come before its end
        with self._lock:
            if event.phase == "done":
                if self._phase == "queries":
                    self.done(self._query_summary())
                self.done()
                return
            name = PHASE_OF_EVENT.get(event.phase, event.phase)
            if name != self._phase:
                self.done(self._query_summary() if self._phase == "queries" else "")
                self.phase(name, self.details.get(name) or self._default_detail(name, event),
                           self._query_target(event) if name == "queries" else None)
                if name == "queries":  # where this run's queries start (a resumed run: past 0)
                    self._event = None
                    self._first_checked = event.queries_checked if event.phase == "querying" else None
            if event.phase == "queries":
                self._query_batch(event)

    def _default_detail(self, name: str, event: ProgressEvent) -> str:
        if name == "queries":
            parts = [f"pool of {event.pool_size}" if event.pool_size else "the student's pool"]
            parts += [f"capped at {self.max_queries}"] if self.max_queries else []
            parts += [f"batches of {self.query_batch_size}"] if self.query_batch_size else []
            if event.phase == "querying" and event.queries_checked:
                parts.append(f"resuming after {event.queries_checked} checked")
            return ", ".join(parts) + ("; ETAs are upper bounds (≤): the privacy budget may stop the phase "
                                       "sooner")
        if name == "student":
            return f"training on {event.queries_answered} answered queries"
        return ""

    def _query_target(self, event: ProgressEvent) -> int | None:
        if not event.pool_size:
            return self.max_queries
        return min(event.pool_size, self.max_queries) if self.max_queries else event.pool_size

    def _query_batch(self, event: ProgressEvent) -> None:
        now = self._clock()
        target = self._query_target(event)
        if self._first_checked is None:  # no "querying" event: the phase's clock starts at its first batch
            self._first_checked = event.queries_checked
        fresh = event.queries_checked - self._first_checked
        elapsed = now - self._phase_start
        self._event, self._done, self._total = event, event.queries_checked, target
        parts = [f"{event.queries_checked}/{target}" if target else str(event.queries_checked)]
        parts[0] += f" checked ({100 * event.queries_checked / target:.0f}%)" if target else " checked"
        parts += [f"{event.queries_answered} answered", f"ε {format_epsilon(event.epsilon)}",
                  f"{format_duration(elapsed)} elapsed"]
        if target and event.queries_checked < target and fresh > 0 and elapsed > 0:
            eta = (target - event.queries_checked) * elapsed / fresh
            self._eta = (eta, now)
            parts.append(f"ETA ≤ {format_duration(eta)}")
        self._say("queries · " + ", ".join(parts))
        self._show(completed=event.queries_checked, total=target,
                   info=f"answered {event.queries_answered:>5}  ε {format_epsilon(event.epsilon)}")

    def _query_summary(self) -> str:
        event = self._event
        if event is None:
            return "no query batch"
        target = self._query_target(event)
        summary = (f"{event.queries_checked}/{target} checked, {event.queries_answered} answered, "
                   f"ε {format_epsilon(event.epsilon)}")
        if target and event.queries_checked < target:
            summary += " (stopped early: privacy budget reached)"
        return summary

    # -- the nodes' reports -------------------------------------------------------------------------

    def follow(self, path: str | Path) -> None:
        """Read the node progress records appended to ``path`` (``clients.progress_log``) on every tick."""
        with self._lock:
            self._files.setdefault(str(path), 0)

    def on_node(self, record: Mapping[str, Any]) -> None:
        """Show one node progress record (a :class:`clients.progress_log.ProgressRecord`)."""
        with self._lock:
            task, node = str(record.get("task", "?")), str(record.get("node", "?"))
            event = record.get("event")
            now = self._clock()
            self._nodes[(task, node)] = (dict(record), now)
            current = task == self._phase  # the bar's row is the current phase's
            if event in ("note", "begin", "end"):
                self._say(f"{task} · node {node}: {record.get('message', '')}")
                if current:
                    self._show(info=f"node {node}: {record.get('message', '')}")
                return
            done, total, eta, shares = self._node_totals(task, now)
            if eta is not None:
                self._eta = (eta, now)
            unit = str(record.get("unit", ""))
            share = f" ({100 * done / total:.0f}%)" if total else ""
            count = len(shares)
            where = f" on {count} node{'s' if count > 1 else ''}"
            if 1 < count <= 4:
                where += " (" + ", ".join(f"node {n} {s:.0f}%" for n, s in shares.items()) + ")"
            tail = f", ETA {format_duration(eta)}" if eta is not None else ""
            if current:
                self._show(completed=done, total=total or None, info=f"{unit}{where}{tail}")
            if now - self._last_node_line.get(task, -math.inf) >= self.every_s:
                self._last_node_line[task] = now
                self._say(f"{task} · {done}/{total} {unit}{share}{where}{tail}")

    def _node_totals(self, task: str, now: float) -> tuple[int, int, float | None, dict[str, float]]:
        """Units done and in all over ``task``'s nodes, the longest remaining ETA, each node's share."""
        done = total = 0
        etas: list[float] = []
        shares: dict[str, float] = {}
        for (t, node), (record, received) in sorted(self._nodes.items()):
            if t != task or not record.get("total"):
                continue
            node_total = int(record["total"])
            node_done = node_total if record.get("event") == "end" else int(record.get("done", 0))
            done, total = done + node_done, total + node_total
            shares[node] = 100 * node_done / node_total
            if record.get("event") == "progress" and record.get("eta_s") is not None:
                etas.append(max(0.0, float(record["eta_s"]) - (now - received)))
        return done, total, (max(etas) if etas else None), shares

    # -- ticks --------------------------------------------------------------------------------------

    def tick(self) -> None:
        """Read the followed files; print a heartbeat if nothing was printed for ``heartbeat_s`` seconds."""
        self._poll_files()
        with self._lock:
            now = self._clock()
            if self._phase is None or self.live or self.heartbeat_s <= 0:
                return
            if now - self._last_line < self.heartbeat_s:
                return
            eta = ""
            if self._eta is not None:
                left = max(0.0, self._eta[0] - (now - self._eta[1]))
                eta = f", ETA {'≤ ' if self._phase == 'queries' else '~'}{format_duration(left)}"
            self._say(f"{self._phase} · still running, {format_duration(self._since_phase())} in this "
                      f"phase{eta}")

    def _poll_files(self) -> None:
        with self._lock:
            files = dict(self._files)
        for path, offset in files.items():
            records, offset = read_progress(path, offset)
            with self._lock:
                self._files[path] = offset
                for record in records:
                    self.on_node(record)

    # -- output -------------------------------------------------------------------------------------

    def _since_phase(self) -> float:
        return self._clock() - self._phase_start

    def _say(self, text: str, *, on_terminal: bool = False) -> None:
        """Print one stamped line: always in a log, on a terminal only if ``on_terminal``."""
        if self.live and not on_terminal:
            return
        now = self._clock()
        self._last_line = now
        self.console.print(f"{clock_label(now - self._t0)} {text}", markup=False, highlight=False,
                           soft_wrap=True)
        with contextlib.suppress(OSError, ValueError):  # a closed or unflushable file loses nothing else
            self.console.file.flush()

    def _show(self, **fields: Any) -> None:
        """Update the current phase's row of the rich bar (terminal only)."""
        if self._bar is not None and self._task is not None:
            if "info" in fields:
                fields["info"] = _short(fields["info"])
            self._bar.update(self._task, **fields)


def _short(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters for a row of the bar."""
    return text if len(text) <= width else text[:width - 1] + "…"
