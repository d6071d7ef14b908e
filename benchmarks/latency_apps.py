"""The apps of :mod:`benchmarks.deploy_latency`: a trivial ClientApp (Flower's own floor) and a probe
ServerApp that times one round trip at a time.

``trivial_client_app`` answers ``query.describe`` at once and imports nothing but Flower, so its round
trip is what any ClientApp pays on a stock SuperNode (the SuperNode's 3 s sleep after an empty pull, a new
``flwr-clientapp`` process per message). ``probe_server_app`` sends ``query.describe`` to one node at a
time, ``repeats`` times per node, each time waiting for the reply with a 0.1 s poll
(:func:`strategies.grid_utils.send_and_receive`), and appends each round trip's seconds to the JSON file
that the environment variable ``PRIVKIT_PROBE_OUT`` names; ``PRIVKIT_PROBE_SPEC`` holds its settings
(JSON: ``nodes``, ``repeats``, ``data`` — the :class:`protocol.pate.DataSpec` fields the project's
``describe`` handler reads). Both read their settings from the environment because the SuperLink's
processes inherit it, and ``flwr run`` accepts only the project's own run-config keys.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

PROBE_OUT_ENV, PROBE_SPEC_ENV = "PRIVKIT_PROBE_OUT", "PRIVKIT_PROBE_SPEC"
PROBE_TIMEOUT_S = 300.0

trivial_client_app = ClientApp()
probe_server_app = ServerApp()


@trivial_client_app.query("describe")
def reply_at_once(msg: Message, context: Context) -> Message:
    """The floor: an empty description, no import, no work."""
    return Message(RecordDict({"role": ConfigRecord({"role": "trivial"})}), reply_to=msg)


@probe_server_app.main()
def probe(grid: Grid, context: Context) -> None:
    """Time ``query.describe`` round trips, one node at a time (see the module docstring)."""
    from protocol.codec import to_record  # the probe's imports; the trivial ClientApp never loads them
    from protocol.pate import DataSpec
    from strategies.grid_utils import send_and_receive, wait_for_nodes

    spec = json.loads(os.environ[PROBE_SPEC_ENV])
    out = Path(os.environ[PROBE_OUT_ENV])
    data = to_record(DataSpec(**spec["data"]))
    rows: list[dict[str, object]] = []
    for repeat in range(int(spec["repeats"])):
        for node in wait_for_nodes(grid, int(spec["nodes"])):
            message = Message(RecordDict({"data": data}), dst_node_id=node, message_type="query.describe")
            start = time.perf_counter()
            replies = send_and_receive(grid, [message], timeout=PROBE_TIMEOUT_S)
            seconds = time.perf_counter() - start
            error = next((r.error.reason for r in replies if r.has_error()), None) if replies else "no reply"
            rows.append({"node": node, "repeat": repeat, "seconds": seconds, "error": error})
            out.write_text(json.dumps(rows, indent=1))
