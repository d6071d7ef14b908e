"""One thin wrapper around Flower's Python simulation entry point.

``flwr.simulation.run_simulation`` is the only way to start Flower's simulation engine from a
Python function (and so from Hydra, including ``--multirun``). It is marked deprecated, gives the
ServerApp an empty ``run_config`` and starts the ServerApp before the virtual SuperNodes have
registered (Flower 1.41–1.42 behaviour, verified here). This module hides those three facts behind
:func:`run_flower_simulation`: settings travel by closure, the server waits for its nodes, and the
value returned by the server's main function comes back to the caller.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from typing import TypeVar

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from strategies.grid_utils import NODE_WAIT_TIMEOUT_S, wait_for_nodes

T = TypeVar("T")

__all__ = ["NODE_WAIT_TIMEOUT_S", "run_flower_simulation", "wait_for_nodes"]


class _HideRunSimulationDeprecation(logging.Filter):
    """Drop Flower's notice that ``run_simulation`` is deprecated (this module is the one place using it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "`run_simulation` function is deprecated" not in record.getMessage()


def run_flower_simulation(
    server_main: Callable[[Grid, Context], T],
    client_app: ClientApp,
    num_supernodes: int,
    *,
    cpus_per_node: float = 1.0,
    total_cpus: int | None = None,
    verbose: bool = False,
    quiet: bool = False,
) -> T:
    """Run ``server_main`` as a ServerApp against ``num_supernodes`` simulated nodes.

    Parameters
    ----------
    server_main : Callable[[Grid, Context], T]
        The server's main function. It is called once all nodes are connected; its return value
        is returned by this function. Exceptions it raises propagate to the caller.
    client_app : ClientApp
        The ClientApp every simulated node runs.
    num_supernodes : int
        Number of simulated SuperNodes (partition-id 0..num_supernodes-1).
    cpus_per_node : float (default: 1.0)
        CPUs Ray reserves per node actor; with 2 cores and 1.0, two nodes run at once.
    total_cpus : int, optional
        CPUs given to Ray; defaults to ``os.cpu_count()``.
    verbose : bool (default: False)
        Keep Flower's and Ray's INFO logs (otherwise only warnings are shown).
    quiet : bool (default: False)
        Without ``verbose``, hide Flower's error logs too (a node's exception and its traceback): for
        callers that report the error the server's main function raises on one line of their own.
    """
    if num_supernodes < 1:
        raise ValueError(f"num_supernodes must be >= 1, got {num_supernodes}")
    from flwr.simulation import run_simulation  # heavy import (Ray): only when a run starts

    outcome: dict[str, T] = {}
    server_app = ServerApp()

    @server_app.main()
    def _main(grid: Grid, context: Context) -> None:
        wait_for_nodes(grid, num_supernodes)
        outcome["value"] = server_main(grid, context)

    backend_config = {
        "client_resources": {"num_cpus": cpus_per_node, "num_gpus": 0.0},
        "init_args": {"num_cpus": total_cpus or os.cpu_count() or 1, "log_to_driver": verbose},
    }
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    flwr_logger = logging.getLogger("flwr")
    previous_level = flwr_logger.level
    deprecation_filter = _HideRunSimulationDeprecation()
    flwr_logger.addFilter(deprecation_filter)
    if not verbose:
        flwr_logger.setLevel(logging.CRITICAL if quiet else logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            if not verbose:  # Ray's notice about a future default for GPU env vars (no GPU used here)
                warnings.filterwarnings("ignore", message="Tip: In future versions of Ray",
                                        category=FutureWarning)
            run_simulation(
                server_app=server_app,
                client_app=client_app,
                num_supernodes=num_supernodes,
                backend_config=backend_config,
                verbose_logging=verbose,
            )
    finally:
        flwr_logger.setLevel(previous_level)
        flwr_logger.removeFilter(deprecation_filter)
    if "value" not in outcome:
        raise RuntimeError("the simulated ServerApp ended without returning a result")
    return outcome["value"]
