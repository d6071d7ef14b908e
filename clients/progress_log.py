"""How far a node's long local step has come (teacher and student training), through Python ``logging``.

A node reports a long step on the logger :data:`LOGGER_NAME` (``flwr_privkit.progress``, level INFO) with
a :class:`WorkMeter`: a line when it notes something (``preparing data``), one when the step begins, at
most one every ``every_s`` seconds while it runs, and one when it ends. Each record's message is a
readable line (``teachers: 6000/25000 teacher-epochs (24%), ETA 1m02s``) and its ``privkit_progress``
attribute the same as a dict (:class:`ProgressRecord` keys), so an operator sees it in the node's log
once logging is configured there, and a driver can follow it.

Flower's simulation engine runs the nodes in Ray actors whose output the driver hides. The simulation
runner therefore wraps the long handlers with :func:`with_progress_file`: while a handler runs, the
records of its thread are appended to a file, one JSON object per line, that the driver reads with
:func:`read_progress` (``simulations.progress``). Nothing of this crosses the wire between server and
nodes, and training is the same with or without a meter: a meter only reads the clock.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from flwr.app import Context, Message

LOGGER_NAME = "flwr_privkit.progress"
"""The logger every :class:`WorkMeter` writes to."""
RECORD_ATTRIBUTE = "privkit_progress"
"""The attribute of a log record that holds its :class:`ProgressRecord`."""

LOGGER = logging.getLogger(LOGGER_NAME)
LOGGER.setLevel(logging.INFO)  # a node's root logger is at WARNING: keep the INFO records alive

Handler = TypeVar("Handler", bound=Callable[[Message, Context], Message])


class ProgressRecord(TypedDict, total=False):
    """One progress report of a node's long step (a line of the progress file)."""

    task: str  # the run phase the step belongs to: "teachers", "student"
    event: str  # "note", "begin", "progress" or "end"
    done: int
    total: int
    unit: str  # what ``done`` and ``total`` count: "teacher-epochs", "steps", "epochs"
    elapsed_s: float  # since the step began (0 for a note before it)
    eta_s: float | None  # the step's remaining time at its rate so far, None before any progress
    message: str
    node: str  # added by :func:`with_progress_file`: the node's partition id (or node id)
    time: float  # added by :func:`with_progress_file`: wall-clock time of the report


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``: a duration in the largest two units."""
    if not math.isfinite(seconds):
        return "?"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class WorkMeter:
    """Throttled progress of one long step on this node, logged to :data:`LOGGER_NAME`.

    Call :meth:`note` for a stage without a count, :meth:`begin` when the counted work starts, the meter
    itself as ``meter(done, total)`` after each unit of work (it logs on the first unit, then at most every
    ``every_s`` seconds, and always on the last unit), and :meth:`finish` at the end. The ETA is the rate
    since the first unit against the units left, so from the second progress record on.

    Parameters
    ----------
    task : str
        The phase the step belongs to (``teachers``, ``student``): the first word of each line.
    unit : str
        What the counts count (``teacher-epochs``, ``steps``).
    every_s : float (default: 5.0)
        Least seconds between two progress records.
    clock : callable (default: time.monotonic)
        Seconds, for the elapsed time and the ETA.
    """

    def __init__(self, task: str, unit: str, *, every_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.task = task
        self.unit = unit
        self.every_s = every_s
        self._clock = clock
        self._start: float | None = None
        self._base: tuple[float, int] | None = None  # (time, done) of the first progress call
        self._last = -math.inf
        self._done = 0
        self._total = 0

    def note(self, message: str) -> None:
        """Log a stage that has no count (``preparing data``)."""
        self._log("note", message)

    def begin(self, total: int | None = None, message: str = "") -> None:
        """Start counting ``total`` units of work now (None: the first progress call says how many)."""
        self._start, self._base = self._clock(), None
        self._done, self._total = 0, total or 0
        self._log("begin", message or f"{total} {self.unit} to go")

    @property
    def elapsed(self) -> float:
        """Seconds since :meth:`begin` (0 before it)."""
        return self._elapsed(self._clock())

    def __call__(self, done: int, total: int | None = None) -> None:
        """``done`` of ``total`` units are finished (``total`` defaults to the last one given)."""
        if self._start is None:
            self.begin(total)
        if total is not None:
            self._total = total
        self._done = done
        now = self._clock()
        if self._base is None:
            self._base = (now, done)
        if done < self._total and now - self._last < self.every_s:
            return
        self._last = now
        share = f" ({100 * done / self._total:.0f}%)" if self._total else ""
        eta = self._eta(now)
        self._log("progress", f"{done}/{self._total} {self.unit}{share}"
                  + ("" if eta is None else f", ETA {format_duration(eta)}"))

    def finish(self, message: str = "") -> None:
        """Log the end of the step and its wall time."""
        self._log("end", message or f"done in {format_duration(self.elapsed)}")

    def _elapsed(self, now: float) -> float:
        return 0.0 if self._start is None else now - self._start

    def _eta(self, now: float) -> float | None:
        """Remaining seconds at the rate since the first progress call (the first unit, which pays for
        warm-ups such as ``torch.func`` tracing, does not count), None before a second one."""
        if self._base is None or self._total <= 0:
            return None
        if self._done >= self._total:
            return 0.0
        seconds, units = now - self._base[0], self._done - self._base[1]
        if seconds <= 0 or units <= 0:
            return None
        return seconds * (self._total - self._done) / units

    def _log(self, event: str, message: str) -> None:
        now = self._clock()
        record: ProgressRecord = {
            "task": self.task, "event": event, "done": self._done, "total": self._total, "unit": self.unit,
            "elapsed_s": self._elapsed(now), "eta_s": self._eta(now) if event == "progress" else None,
            "message": message}
        LOGGER.info("%s: %s", self.task, message, extra={RECORD_ATTRIBUTE: record})


class _JsonLinesHandler(logging.Handler):
    """Appends the progress records of one thread to a file, one JSON object per line."""

    def __init__(self, path: str, node: str, thread: int) -> None:
        super().__init__(logging.INFO)
        self.path, self.node, self.thread = path, node, thread

    def emit(self, record: logging.LogRecord) -> None:
        payload = getattr(record, RECORD_ATTRIBUTE, None)
        if payload is None or record.thread != self.thread:
            return  # another handler's call on this process, or not a progress record
        line = json.dumps({**payload, "node": self.node, "time": time.time()}) + "\n"
        try:  # one write() on an O_APPEND descriptor: lines of concurrent nodes do not interleave
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError:
            pass  # progress is best effort: it never fails the node's work


def with_progress_file(handler: Handler, path: str | Path) -> Handler:
    """``handler`` with its thread's progress records appended to ``path`` while it runs.

    Each line is a :class:`ProgressRecord` plus ``node`` (``node_config["partition-id"]``, else the node
    id) and ``time``. Writing never raises: a file that cannot be written loses the progress only.
    """
    target = str(Path(path).resolve())

    def run(msg: Message, context: Context) -> Message:
        node = context.node_config.get("partition-id", context.node_id)
        file_handler = _JsonLinesHandler(target, str(node), threading.get_ident())
        LOGGER.addHandler(file_handler)
        try:
            return handler(msg, context)
        finally:
            LOGGER.removeHandler(file_handler)
            file_handler.close()

    run.__name__ = getattr(handler, "__name__", "handler")
    run.__doc__ = handler.__doc__
    return run  # type: ignore[return-value]


def read_progress(path: str | Path, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """The complete records of ``path`` from byte ``offset`` on, and the offset after the last one.

    A line still being written (no newline yet) is left for the next call; a line that is not a JSON
    object is skipped. A missing file has no records.
    """
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n") + 1
    records = []
    for line in data[:end].splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records, offset + end
