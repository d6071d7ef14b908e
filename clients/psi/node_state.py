"""What both PSI backends' Flower handlers keep at the node: state keys, the party's policies
(:class:`PartyPolicy`), the staging and session records.

A party keeps its alignment-wide working state in ``context.state["psi.staging"]`` and the pairwise
session in progress in ``context.state["psi.session"]`` (``clients.psi.handlers`` documents every key).
The session record names its ``role`` (``receiver`` / ``sender``) and its ``backend``
(``paillier`` / ``ecdh``); a handler refuses a session of another role or backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from flwr.app import ConfigRecord, Context

from clients.psi.ids import DuplicatePolicy, PreparedIds, id_from_canonical_bytes, prepare_ids
from clients.psi.pool import resolve_workers
from protocol.psi import ALIGNMENT_ID_KEY, SESSION_ID_KEY, PSIError, SessionMismatchError, require_field

ALIGNMENT_STATE_KEY = "psi.alignment"
"""``context.state`` key of the committed alignment (a ``ConfigRecord``)."""
PREVIOUS_STATE_KEY = "psi.previous"
STAGING_STATE_KEY = "psi.staging"
SESSION_STATE_KEY = "psi.session"
PENDING_STATE_KEY = "psi.pending"
WORKERS_NODE_CONFIG_KEY = "psi-workers"
"""Optional ``node_config`` key: processes for the PSI hot loops on this node."""

Config = dict[str, Any]


@dataclass(frozen=True)
class PartyPolicy:
    """What the handlers of one ClientApp share: how to load IDs and node-local policies."""

    load_ids: Callable[[Context], Sequence[str | int]]
    workers: int | None
    duplicates: DuplicatePolicy
    allow_insecure_key_size: bool

    def prepared(self, context: Context) -> PreparedIds:
        return prepare_ids(self.load_ids(context), self.duplicates)

    def pool_size(self, context: Context) -> int:
        if self.workers is not None:
            return resolve_workers(self.workers)
        configured = context.node_config.get(WORKERS_NODE_CONFIG_KEY)
        return resolve_workers(int(configured) if configured is not None else os.cpu_count())


def clear_staging(context: Context) -> None:
    """Drop the alignment's working state: staging, session and pending records."""
    for key in (STAGING_STATE_KEY, SESSION_STATE_KEY, PENDING_STATE_KEY):
        if key in context.state:
            del context.state[key]


def staging_record(context: Context, config: Config) -> ConfigRecord:
    """The staging record of the alignment named in the message."""
    alignment_id = require_field(config, ALIGNMENT_ID_KEY, str)
    if STAGING_STATE_KEY not in context.state:
        raise SessionMismatchError("no alignment in progress at this node (psi_begin missing or aborted)")
    staging = context.state.config_records[STAGING_STATE_KEY]
    if staging["alignment_id"] != alignment_id:
        raise SessionMismatchError("message for another alignment than the one in progress")
    return staging


def checked_ids(party: PartyPolicy, context: Context, staging: ConfigRecord) -> PreparedIds:
    """The party's prepared IDs, refused if they changed since ``psi_begin`` (digest in ``staging``)."""
    prepared = party.prepared(context)
    if prepared.digest != staging["digest"]:
        raise PSIError("the party's IDs changed during the alignment")
    return prepared


def session_record(context: Context, config: Config, role: str | None, backend: str | None) -> ConfigRecord:
    """The pairwise session named in the message (of the alignment in progress), in the expected role
    and backend (``None``: any)."""
    staging_record(context, config)
    session_id = require_field(config, SESSION_ID_KEY, str)
    if SESSION_STATE_KEY not in context.state:
        raise SessionMismatchError("no PSI session in progress at this node")
    session = context.state.config_records[SESSION_STATE_KEY]
    if session["session_id"] != session_id:
        raise SessionMismatchError("message for another PSI session than the one in progress")
    if role is not None and session["role"] != role:
        raise PSIError(f"this node is not the {role} of the session")
    session_backend = session.get("backend", "paillier")
    if backend is not None and session_backend != backend:
        raise PSIError(f"the session in progress uses the {session_backend} backend, not {backend}")
    return session


def subset_ids(prepared: PreparedIds, subset: Sequence[int]) -> list[str | int]:
    """The IDs at the prepared-ID indices ``subset``."""
    return [id_from_canonical_bytes(prepared.canonical[i]) for i in subset]


def record_pair(
    staging: ConfigRecord, session_id: str, positions: Sequence[int], indices: Sequence[int]
) -> None:
    """Remember, for one session, which of the party's IDs sits at which reply position."""
    staging["sessions"] = [*staging["sessions"], session_id]  # type: ignore[misc]
    staging[f"{session_id}.positions"] = list(positions)
    staging[f"{session_id}.indices"] = list(indices)


def pair_map(staging: ConfigRecord, session_id: str) -> dict[int, int]:
    """Reply position → index into the party's prepared IDs, for one finished session."""
    if session_id not in staging["sessions"]:  # type: ignore[operator]
        raise PSIError("unknown or unfinished PSI session")
    return dict(zip(staging[f"{session_id}.positions"], staging[f"{session_id}.indices"], strict=True))  # type: ignore[arg-type]
