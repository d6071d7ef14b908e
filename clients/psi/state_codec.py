"""Node-local persistence of a PSI role between Flower messages: plain values for a ``ConfigRecord``.

A party's :class:`~clients.psi.fnp_receiver.PSIReceiver` or :class:`~clients.psi.fnp_sender.PSISender` is
rebuilt from ``context.state`` at every step of the Flower alignment phase (``clients.psi.handlers``);
these helpers turn its parts into ``ConfigRecord`` values and back. The receiver's state holds its
private key: it never leaves the node.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Any

from gmpy2 import mpz

from clients.psi.ids import PreparedIds
from protocol.psi import SetupHeader, header_fields, int_to_bytes, strip_header_fields

StateValue = int | str | bytes | bool | list[int] | list[bytes]


def new_session_id() -> str:
    """A fresh random session ID (128 bits, hex)."""
    return secrets.token_hex(16)


def int_bytes(value: int | mpz) -> bytes:
    """Big-endian bytes of a non-negative integer (``b""`` for 0)."""
    return int_to_bytes(int(value))


def prepared_to_state(prepared: PreparedIds) -> dict[str, StateValue]:
    """A party's prepared IDs as state values."""
    return {
        "canonical": list(prepared.canonical),
        "rows": list(prepared.rows),
        "num_rows": prepared.num_rows,
        "digest": prepared.digest,
    }


def prepared_from_state(state: dict[str, Any]) -> PreparedIds:
    """Inverse of :func:`prepared_to_state`."""
    return PreparedIds(
        list(state["canonical"]), list(state["rows"]), int(state["num_rows"]), str(state["digest"])
    )


def header_to_state(header: SetupHeader | None) -> dict[str, StateValue]:
    """The setup header (if any) as ``header.*`` state values, the same keys as on the wire."""
    if header is None:
        return {"has_header": False}
    return {"has_header": True, **header_fields(header.to_config())}


def header_from_state(state: dict[str, Any]) -> SetupHeader | None:
    """Inverse of :func:`header_to_state`."""
    if not state["has_header"]:
        return None
    return SetupHeader.from_config(strip_header_fields(state))


def values_to_bytes(values: Sequence[int], id_bits: int) -> bytes:
    """Hashed IDs as fixed-width big-endian bytes."""
    size = (id_bits + 7) // 8
    return b"".join(value.to_bytes(size, "big") for value in values)


def values_from_bytes(blob: bytes, id_bits: int) -> list[int]:
    """Inverse of :func:`values_to_bytes`."""
    size = (id_bits + 7) // 8
    return [int.from_bytes(blob[i : i + size], "big") for i in range(0, len(blob), size)]
