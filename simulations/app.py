"""The Flower ServerApp and ClientApp of flwr-privkit, for ``flwr run .`` and deployments.

``[tool.flwr.app.config]`` in ``pyproject.toml`` holds the defaults (a test keeps them equal to the
typed schemas); ``flwr run . --run-config "pate.strategy.sigma=40"`` overrides them. The key
``method`` selects what the ServerApp runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flwr.app import Context
from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod
from flwr.serverapp import Grid, ServerApp

from clients.node_output import with_output_dir
from clients.pate import student, teacher
from clients.pate.node import handle_describe, handle_prepare
from clients.pate.secagg import register_secagg_handlers
from clients.progress_log import with_progress_file
from clients.vertical.handlers import register_vertical_handlers
from protocol.codec import from_flat
from protocol.vertical import VerticalConfig
from simulations.pate_config import PateConfig
from simulations.pate_server import run_pate_server
from simulations.results import vertical_run_record, write_results
from strategies.grid_utils import wait_for_nodes
from strategies.vertical_prototype import run_vertical

METHODS = ("pate", "vertical")



def build_client_app(
    output_dir: str | Path | None = None,
    progress_file: str | Path | None = None,
    *,
    allow_insecure_psi_keys: bool = False,
    allow_plaintext_ids: bool = False,
    mods: Sequence[Mod] = (),
) -> ClientApp:
    """The ClientApp of both methods: every message type of PATE (``query.describe``, ``query.prepare``,
    ``train.teachers``, ``query.votes``, ``query.queries``, ``train.student``, ``query.secagg_*``) and of
    the vertical exchange (``query.vfl_*``, ``train.vfl_*``, ``query.psi_*``, ...).

    With ``output_dir``, nodes whose ``node_config`` names no ``output-dir`` write under it (the
    simulation runners pass the run's folder). With ``progress_file``, the student's data preparation
    and teacher and student training append their progress to that file (``clients.progress_log``), for
    a driver on the same machine to show (``simulations.progress``). ``allow_insecure_psi_keys`` (nodes
    accept Paillier keys below 2048 bits) and ``allow_plaintext_ids`` (the vertical ``ids`` operation
    answers) are for tests and rehearsals only (:func:`clients.vertical.handlers.register_vertical_handlers`).
    ``mods`` wrap every handler (e.g. :mod:`simulations.fault_app`'s fault injection).
    """
    app = ClientApp(mods=list(mods))
    app.query("describe")(handle_describe)
    prepare, train_teachers, train_student = handle_prepare, teacher.handle_train, student.handle_train
    if output_dir is not None:
        train_student = with_output_dir(train_student, output_dir)
    if progress_file is not None:  # the long steps: data preparation and training
        prepare = with_progress_file(prepare, progress_file)
        train_teachers = with_progress_file(train_teachers, progress_file)
        train_student = with_progress_file(train_student, progress_file)
    app.query("prepare")(prepare)
    app.train("teachers")(train_teachers)
    app.query("votes")(teacher.handle_votes)
    app.query("queries")(student.handle_queries)
    app.train("student")(train_student)
    register_secagg_handlers(app)  # query.secagg_*: noised votes under secure aggregation
    register_vertical_handlers(app, allow_insecure_psi_keys=allow_insecure_psi_keys,  # vfl_*, psi_*
                               allow_plaintext_ids=allow_plaintext_ids, output_dir=output_dir)
    return app


client_app = build_client_app()

server_app = ServerApp()


def section(run_config: dict[str, Any], name: str) -> dict[str, Any]:
    """The ``name.``-prefixed keys of ``run_config``, with the prefix removed."""
    prefix = f"{name}."
    return {k[len(prefix):]: v for k, v in run_config.items() if k.startswith(prefix)}


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    """Dispatch on ``run_config["method"]``. A PATE run first waits for its ``federation.teacher_nodes``
    teacher nodes and the student to connect (the vertical run waits for its parties)."""
    run_config = dict(context.run_config)
    method = str(run_config.get("method", "pate"))
    if method == "pate":
        cfg = from_flat(PateConfig, section(run_config, "pate"), what="run_config")
        wait_for_nodes(grid, cfg.federation.teacher_nodes + 1)  # a late SuperNode would silently sit out
        run_pate_server(grid, cfg)
    elif method == "vertical":
        cfg = from_flat(VerticalConfig, section(run_config, "vertical"), what="run_config")  # validated here
        results = run_vertical(grid, cfg)
        if cfg.output_dir:
            write_results(cfg.output_dir, vertical_run_record(cfg, results))
    else:
        raise ValueError(f"run_config method must be one of {METHODS}, got {method!r}")
