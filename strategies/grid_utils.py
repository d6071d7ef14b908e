"""What a ServerApp does with its ``Grid`` before a protocol starts (server side only)."""

from __future__ import annotations

import re
import time

from flwr.serverapp import Grid

NODE_WAIT_TIMEOUT_S = 120.0


def wait_for_nodes(grid: Grid, num_nodes: int, timeout: float = NODE_WAIT_TIMEOUT_S) -> list[int]:
    """Block until ``num_nodes`` nodes are connected; return their IDs in a stable (sorted) order.

    Raises
    ------
    TimeoutError
        If fewer than ``num_nodes`` nodes registered within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        node_ids = sorted(grid.get_node_ids())
        if len(node_ids) >= num_nodes:
            return node_ids
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"only {len(node_ids)} of {num_nodes} nodes connected within {timeout:.0f} s"
            )
        time.sleep(0.2)


_WRAPPED = re.compile(r"<class '[^']*'>:<'(.*)'>", re.DOTALL)


def node_error(reason: str) -> str:
    """The node's own message in the ``reason`` of a Flower error reply, on one line.

    A ClientApp's exception reaches the server as ``"<class 'ValueError'>:<'message'>"`` in a deployment
    and, in the simulation engine, wrapped in a Ray task error holding the node's whole traceback and
    ending ``Exception ClientAppException occurred. Message: message'>``; either gives the first line of
    ``message``. Any other reason is returned as it is.
    """
    text = reason.strip()
    marker = "Message: "
    if marker in text:
        lines = text[text.rindex(marker) + len(marker):].splitlines()
        line = lines[0].strip() if lines else ""
        line = line[:-2] if line.endswith("'>") else line
    elif match := _WRAPPED.fullmatch(text):
        lines = match.group(1).strip().splitlines()
        line = lines[0].strip() if lines else ""
    else:
        return text
    return line or text
