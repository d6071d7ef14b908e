"""The Flower ClientApp of flwr-privkit, for ``flwr run .``, deployments and the simulations.

It imports nothing heavy: each handler's module is imported by the first message of its type
(:mod:`clients.lazy_handlers`). The ServerApp is :mod:`simulations.server_app`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flwr.clientapp import ClientApp
from flwr.clientapp.typing import Mod

from clients.lazy_handlers import Handler, LazyHandler, LazyRegistration
from clients.node_output import with_output_dir
from clients.progress_log import with_progress_file
from protocol.pate import (
    MSG_DESCRIBE,
    MSG_NEXT_QUERIES,
    MSG_PREPARE_DATA,
    MSG_TRAIN_STUDENT,
    MSG_TRAIN_TEACHERS,
    MSG_VOTES,
)
from protocol.psi import ACTIONS as PSI_ACTIONS
from protocol.psi import MESSAGE_TYPE_PREFIX as PSI_PREFIX
from protocol.secagg import MSG_SECAGG_KEYS, MSG_SECAGG_MASKED, MSG_SECAGG_SHARES, MSG_SECAGG_UNMASK
from protocol.vertical import MESSAGE_TYPES as VERTICAL_MESSAGE_TYPES


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

    Each handler's module is imported on the first message of its type (:mod:`clients.lazy_handlers`):
    in a deployment every message is a new process, and a ``describe`` should not pay for torch.
    """
    handlers: dict[str, Handler] = {
        MSG_DESCRIBE: LazyHandler("clients.pate.node:handle_describe"),
        MSG_PREPARE_DATA: LazyHandler("clients.pate.node:handle_prepare"),
        MSG_TRAIN_TEACHERS: LazyHandler("clients.pate.teacher:handle_train"),
        MSG_VOTES: LazyHandler("clients.pate.teacher:handle_votes"),
        MSG_NEXT_QUERIES: LazyHandler("clients.pate.node:handle_queries"),
        MSG_TRAIN_STUDENT: LazyHandler("clients.pate.student:handle_train"),
    }
    if output_dir is not None:
        handlers[MSG_TRAIN_STUDENT] = with_output_dir(handlers[MSG_TRAIN_STUDENT], output_dir)
    if progress_file is not None:  # the long steps: data preparation and training
        for long_step in (MSG_PREPARE_DATA, MSG_TRAIN_TEACHERS, MSG_TRAIN_STUDENT):
            handlers[long_step] = with_progress_file(handlers[long_step], progress_file)
    secagg = LazyRegistration("clients.pate.secagg:register_secagg_handlers")  # noised votes, secure sum
    for message_type in (MSG_SECAGG_KEYS, MSG_SECAGG_SHARES, MSG_SECAGG_MASKED, MSG_SECAGG_UNMASK):
        handlers[message_type] = secagg.handler(message_type)
    vertical = LazyRegistration(  # vfl_* and psi_*
        "clients.vertical.handlers:register_vertical_handlers",
        allow_insecure_psi_keys=allow_insecure_psi_keys, allow_plaintext_ids=allow_plaintext_ids,
        output_dir=output_dir)
    for message_type in (*VERTICAL_MESSAGE_TYPES.values(), *(PSI_PREFIX + a for a in PSI_ACTIONS)):
        handlers[message_type] = vertical.handler(message_type)
    app = ClientApp(mods=list(mods))
    registrars = {"query": app.query, "train": app.train, "evaluate": app.evaluate}
    for message_type, handler in handlers.items():
        kind, _, name = message_type.partition(".")
        registrars[kind](name)(handler)
    return app


client_app = build_client_app()
