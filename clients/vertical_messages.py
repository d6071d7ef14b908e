"""Wire format of the vertical protocol: operation → Flower message type, payload ↔ ``RecordDict``.

A payload is a flat dict whose values are numpy arrays, lists of numpy arrays, scalars or lists of
strings. Arrays travel in the ``ArrayRecord`` ``"vfl_arrays"`` (a list ``key`` as ``key[0]``, ``key[1]``, …
with its length under ``key[]`` in the config record, so empty lists survive), everything else in the
``ConfigRecord`` ``"vfl_payload"``. Every server message also carries the run's flat configuration in the
``ConfigRecord`` ``"vfl_config"``, so a ClientApp needs no ``run_config``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

CONFIG_KEY = "vfl_config"
ARRAYS_KEY = "vfl_arrays"
PAYLOAD_KEY = "vfl_payload"

MESSAGE_TYPES: dict[str, str] = {
    "describe": "query.vfl_describe",
    "ids": "query.vfl_ids",
    "align": "query.vfl_align",
    "step": "train.vfl_step",
    "snapshot": "query.vfl_snapshot",
    "prototypes": "query.vfl_prototypes",
    "receive": "train.vfl_receive",
    "local": "train.vfl_local",
    "select_fusion": "train.vfl_select_fusion",
    "predict": "query.vfl_predict",
    "evaluate": "evaluate.vfl_evaluate",
    "attack": "query.vfl_attack",
    "score": "query.vfl_score",
    "save": "query.vfl_save",
}
"""Every protocol operation and the Flower message type that carries it."""


def encode_payload(payload: dict[str, Any], config: dict[str, Any] | None = None) -> RecordDict:
    """Pack a payload (and optionally the run's flat config) into a ``RecordDict``.

    Raises
    ------
    TypeError
        On a value that is neither an array, a list of arrays, a scalar nor a list of strings.
    """
    arrays: dict[str, Array] = {}
    scalars: dict[str, Any] = {}
    for key, value in payload.items():
        if isinstance(value, np.ndarray):
            arrays[key] = Array(np.ascontiguousarray(value))
        elif isinstance(value, list) and all(isinstance(v, np.ndarray) for v in value):
            scalars[f"{key}[]"] = len(value)
            arrays.update({f"{key}[{i}]": Array(np.ascontiguousarray(v)) for i, v in enumerate(value)})
        elif isinstance(value, bool | int | float | str) or (
                isinstance(value, list) and all(isinstance(v, str) for v in value)):
            scalars[key] = value
        else:
            raise TypeError(f"payload value {key!r} of type {type(value).__name__} cannot be sent")
    content = RecordDict({ARRAYS_KEY: ArrayRecord(arrays), PAYLOAD_KEY: ConfigRecord(scalars)})
    if config is not None:
        content[CONFIG_KEY] = ConfigRecord(dict(config))
    return content


def decode_payload(content: RecordDict) -> dict[str, Any]:
    """Inverse of :func:`encode_payload` (without the config record)."""
    arrays = content.array_records.get(ARRAYS_KEY, ArrayRecord())
    scalars = dict(content.config_records.get(PAYLOAD_KEY, ConfigRecord()))
    out: dict[str, Any] = {}
    for key, value in scalars.items():
        if key.endswith("[]"):
            name = key[:-2]
            out[name] = [arrays[f"{name}[{i}]"].numpy() for i in range(int(value))]
        else:
            out[key] = value
    for key, array in arrays.items():
        if "[" not in key:
            out[key] = array.numpy()
    return out


def decode_config(content: RecordDict) -> dict[str, Any]:
    """The run's flat configuration carried by a server message.

    Raises
    ------
    ValueError
        If the message carries no configuration.
    """
    if CONFIG_KEY not in content.config_records:
        raise ValueError(f"vertical protocol message lacks its {CONFIG_KEY!r} config record")
    return dict(content.config_records[CONFIG_KEY])
