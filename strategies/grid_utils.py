"""What a ServerApp does with its ``Grid`` before a protocol starts (server side only)."""

from __future__ import annotations

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
