"""A ClientApp that replies with malformed content on purpose: fault rehearsals on real processes.

It is the project's ClientApp (:func:`simulations.app.build_client_app`: every message type, the same
handlers) with one mod, and a node whose ``node_config`` has ``fault="<message type>:<kind>"`` (e.g.
``fault="query.votes:nan"``) then corrupts its replies of that type, so a deployment can show that the
server rejects them with a logged reason. The kinds, applied to the reply's first ``ArrayRecord``:

- ``shape``: every array loses its last column (last element, for a vector);
- ``dtype``: integer arrays become float64 and float arrays int64 (same values, rounded);
- ``nan``: every array becomes float64 with its first entry NaN;
- ``missing``: the record is left out of the reply.

Nodes without ``fault`` behave exactly like the project's ClientApp. This app also lets nodes accept
Paillier keys below 2048 bits (``vertical.strategy.psi_key_bits``), to keep rehearsals short: it is for
rehearsals on bundled or synthetic data only, never for a real deployment.
``simulations.deploy_local.stage_app`` builds an app that uses it.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, Context, Message, RecordDict
from flwr.clientapp.typing import ClientAppCallable

from simulations.app import build_client_app

FAULT_NODE_CONFIG_KEY = "fault"
FAULT_KINDS = ("shape", "dtype", "nan", "missing")


def parse_fault(text: str) -> tuple[str, str]:
    """``"query.votes:nan"`` → ``("query.votes", "nan")``; ``ValueError`` naming the text otherwise."""
    message_type, _, kind = str(text).rpartition(":")
    if "." not in message_type or kind not in FAULT_KINDS:
        raise ValueError(f"node_config {FAULT_NODE_CONFIG_KEY}={text!r}: expected '<message type>:<kind>' "
                         f"with a kind in {FAULT_KINDS}, e.g. 'query.votes:nan'")
    return message_type, kind


def _corrupt_array(values: np.ndarray, kind: str) -> np.ndarray:
    if kind == "shape":
        return values[..., :-1] if values.ndim else values.reshape(1)
    if kind == "dtype":
        return values.astype(np.float64 if np.issubdtype(values.dtype, np.integer) else np.int64)
    bad = values.astype(np.float64)
    bad.reshape(-1)[:1] = np.nan
    return bad


def corrupt(content: RecordDict, kind: str) -> RecordDict:
    """A copy of ``content`` whose first ``ArrayRecord`` is corrupted as ``kind`` says."""
    names = list(content.array_records)
    if not names:
        raise ValueError(f"cannot inject fault {kind!r}: the reply has no ArrayRecord")
    target = names[0]
    out = RecordDict({k: v for k, v in content.items() if not (kind == "missing" and k == target)})
    if kind != "missing":
        arrays = content.array_records[target]
        out[target] = ArrayRecord({k: Array(np.ascontiguousarray(_corrupt_array(arrays[k].numpy(), kind)))
                                   for k in arrays})
    return out


def inject_fault(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """Mod: serve ``message``, then corrupt the reply if this node's ``fault`` names its type."""
    reply = call_next(message, context)
    if FAULT_NODE_CONFIG_KEY not in context.node_config or reply.has_error():
        return reply
    message_type, kind = parse_fault(str(context.node_config[FAULT_NODE_CONFIG_KEY]))
    if message.metadata.message_type != message_type:
        return reply
    return Message(corrupt(reply.content, kind), reply_to=message)


client_app = build_client_app(allow_insecure_psi_keys=True, mods=[inject_fault])
