"""The Flower ServerApp of flwr-privkit, for ``flwr run .`` and deployments.

``[tool.flwr.app.config]`` in ``pyproject.toml`` holds the defaults (a test keeps them equal to the
typed schemas); ``flwr run . --run-config "pate.strategy.sigma2=40"`` overrides them. The key
``method`` selects what the ServerApp runs. The nodes' ClientApp is :mod:`simulations.app`.

A setting's earlier name (a schema's ``renamed_keys``, e.g. ``pate.strategy.sigma``, now
``pate.strategy.sigma2``) stays in the table with the empty string, which means unset: Flower refuses an
override of a key the table lacks with its own message, so the old name is let through to
:func:`protocol.codec.from_flat`, which refuses it naming the new key and the value given.
"""

from __future__ import annotations

from typing import Any

from flwr.app import Context
from flwr.serverapp import Grid, ServerApp

from protocol.codec import from_flat
from protocol.vertical import VerticalConfig
from simulations.pate_config import PateConfig
from simulations.pate_server import log_progress, run_pate_server
from simulations.results import vertical_run_record, write_results
from strategies.grid_utils import wait_for_nodes
from strategies.vertical_flower import run_vertical

METHODS = ("pate", "vertical")

server_app = ServerApp()


SCHEMAS: dict[str, type] = {"pate": PateConfig, "vertical": VerticalConfig}


def section(run_config: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``name.``-prefixed keys of ``run_config``, with the prefix removed; an earlier name of a setting
    left unset (the empty string of ``[tool.flwr.app.config]``) is left out."""
    prefix = f"{name}."
    renamed = getattr(SCHEMAS.get(name), "renamed_keys", {})
    return {k[len(prefix):]: v for k, v in run_config.items()
            if k.startswith(prefix) and not (k[len(prefix):] in renamed and v == "")}


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Dispatch on ``run_config["method"]``. A PATE run first waits for its ``federation.teacher_nodes``
    teacher nodes and the student to connect (the vertical run waits for its parties), and logs its
    progress (:func:`simulations.pate_server.log_progress`)."""
    run_config = dict(context.run_config)
    method = str(run_config.get("method", "pate"))
    if method == "pate":
        cfg = from_flat(PateConfig, section(run_config, "pate"), what="run_config")
        wait_for_nodes(grid, cfg.federation.teacher_nodes + 1)  # a late SuperNode would silently sit out
        run_pate_server(grid, cfg, log_progress)
    elif method == "vertical":
        cfg = from_flat(VerticalConfig, section(run_config, "vertical"), what="run_config")  # validated here
        results = run_vertical(grid, cfg)
        if cfg.output_dir:
            write_results(cfg.output_dir, vertical_run_record(cfg, results))
    else:
        raise ValueError(f"run_config method must be one of {METHODS}, got {method!r}")
