"""Peak-memory hook of :mod:`benchmarks.vertical_party_memory`: put this folder first on ``PYTHONPATH``.

Active only when the environment sets ``PEAK_RSS_DIR``: then every Python process started with that
environment writes, when it exits normally, ``<PEAK_RSS_DIR>/<pid>.json`` with its PID, parent PID,
command line and peak resident memory (``VmHWM`` of ``/proc/self/status``, KiB). It catches the peak of
a short-lived process (a Flower ClientApp serving one message) that a poller of ``/proc`` may miss in
its last instants. It does nothing else.

``VmHWM``, not ``getrusage``'s ``ru_maxrss``: Linux carries the peak of the address space a process
replaced at ``exec`` into its ``ru_maxrss``, so a process started by ``vfork`` + ``exec`` (Python's
``subprocess``) reports at least its parent's peak (a 10 MB child of a 500 MB parent reports 500 MB);
``VmHWM`` belongs to the process's own address space.
"""

import atexit
import contextlib
import json
import os
import sys

_DIR = os.environ.get("PEAK_RSS_DIR")


def _record() -> None:
    with open("/proc/self/status") as handle:
        hwm_kb = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    entry = {"pid": os.getpid(), "ppid": os.getppid(), "argv": sys.argv, "hwm_kb": hwm_kb}
    path = os.path.join(_DIR, f"{os.getpid()}.json")
    with contextlib.suppress(OSError):  # the folder is gone: a straggler outliving the measurement
        with open(path + ".tmp", "w") as handle:
            json.dump(entry, handle)
        os.replace(path + ".tmp", path)


if _DIR:
    atexit.register(_record)
