"""The vertical party's Flower ClientApp handlers (role ``active`` or ``passive``).

Which party a node is comes from ``node_config``: ``party=<index>`` in a deployment (party 0 is the
active, label-holding party; ``role=active|passive`` may be given and must agree), or ``partition-id``
in a simulation. The ``describe`` message that starts a run carries the run's configuration (see
:mod:`protocol.vertical`): the node decodes and validates it once, keeps the record in
``context.state`` and the decoded :class:`protocol.vertical.VerticalConfig` in a per-process cache
keyed by the record, so later messages of the run reuse it. From it the node loads its own columns and
rows — from its own party file when ``node_config`` names one (``data-file``: ``.npz``,
:mod:`clients.vertical.party_files`, or ``.csv``, :mod:`clients.vertical.party_csv`) or the run's
``dataset.data_dir`` holds ``party{k}.npz``/``.csv``, else from the configured bundled dataset
(:func:`clients.vertical.data.make_vertical_split`, deterministic in the seed) — and rebuilds its party
(:mod:`clients.vertical.parties`) from ``context.state``; after a state-changing operation the party's
state is written back there. A ``reset`` (``strategy.tune = auto``: one tuning trial, or the run after
them) replaces the kept configuration by the party's new settings, so the run's later messages train
with them. Nothing is kept in module globals except caches of the loaded data and of
decoded configurations.

Alignment: the ``align`` operation takes the aligned IDs either from the PSI run (payload
``source="psi"``: :func:`clients.psi.handlers.get_alignment`, after :func:`strategies.alignment.run_alignment`
drove the ``query.psi_*`` handlers registered here with :func:`load_ids`) or, for the explicitly
insecure test-only plaintext mode, from the payload itself.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp

from clients.node_output import node_file, node_output_dir, with_output_dir
from clients.psi.handlers import get_alignment, register_psi_handlers
from clients.vertical.active_party import ActiveParty
from clients.vertical.data import PartyData, VerticalSplit, make_vertical_split
from clients.vertical.parties import make_party
from clients.vertical.party_csv import (
    FeatureTransform,
    csv_settings,
    read_party_csv,
    save_transform,
    transform_path,
)
from clients.vertical.party_files import (
    DATA_FILE_NODE_CONFIG_KEY,
    check_party_count,
    file_sha256,
    load_party_file,
)
from clients.vertical.passive_party import PassiveParty
from protocol.codec import from_record, to_flat
from protocol.vertical import (
    ACTIVE,
    MESSAGE_TYPES,
    PASSIVE,
    VerticalConfig,
    config_record,
    decode_payload,
    encode_payload,
)

STATE_KEY = "vfl_party"
CONFIG_STATE_KEY = "vfl_run_config"
READ_ONLY_OPS = ("describe", "ids", "predict", "evaluate", "attack", "score", "save")


def party_index(context: Context, n_parties: int) -> int:
    """This node's party index from ``node_config`` (``party`` in deployment, ``partition-id`` in simulation).

    Raises
    ------
    ValueError
        If neither key is set, the index is out of range, or a ``role`` key contradicts it.
    """
    node_config = context.node_config
    if "party" in node_config:
        index = _config_index(node_config["party"], "party")
    elif "partition-id" in node_config:
        index = _config_index(node_config["partition-id"], "partition-id")
    else:
        raise ValueError("node_config must set 'party' (deployment) or 'partition-id' (simulation)")
    if not 0 <= index < n_parties:
        raise ValueError(f"party index must be in [0, {n_parties}), got {index}")
    role = node_config.get("role")
    if role is not None and str(role) != (ACTIVE if index == 0 else PASSIVE):
        raise ValueError(f"node_config role={role!r} contradicts party={index} (party 0 is the active party)")
    return index


def _config_index(value: object, key: str) -> int:
    """``node_config[key]`` as a party index: an int, or a string of decimal digits."""
    whole = isinstance(value, int) or (isinstance(value, str) and value.isdigit())
    if isinstance(value, bool) or not whole:
        raise ValueError(f"node_config {key!r} must be a whole number >= 0, got {value!r}")
    return int(value)


@functools.lru_cache(maxsize=4)
def _split(name: str, n_parties: int, aligned: float, val: float, test: float, seed: int) -> VerticalSplit:
    return make_vertical_split(name, n_parties=n_parties, aligned_fraction=aligned, validation_fraction=val,
                               test_fraction=test, seed=seed)


def party_data(cfg: VerticalConfig, index: int, data_file: str | None = None,
               settings: Mapping[str, Any] | None = None, output_dir: str | Path | None = None) -> PartyData:
    """This party's data: its own party file if given, else ``party{index}.{npz,csv}`` in the configured
    ``dataset.data_dir``, else its own view of the configured bundled split (a node keeps only its own
    part). ``.csv`` files are read by :func:`clients.vertical.party_csv.read_party_csv` with ``settings``
    (``node_config``'s CSV keys), anything else by :func:`clients.vertical.party_files.load_party_file`. With
    ``output_dir`` a CSV's fitted transform is written there (``party{index}.features.json``, and its path
    kept in ``transform``); nothing is ever written beside the data file.

    Raises
    ------
    FileNotFoundError
        If ``dataset.data_dir`` holds neither ``party{index}.npz`` nor ``party{index}.csv``.
    ValueError
        If ``dataset.data_dir`` holds another number of party files than ``dataset.n_parties``.
    """
    data_file = party_file(cfg, index, data_file)
    if data_file is not None:
        path = Path(data_file)
        if path.suffix.lower() == ".csv":
            options = csv_settings(path, settings or {})
            mtime = os.stat(data_file).st_mtime_ns
            data, transform = _party_csv(data_file, index, tuple(sorted(options.items())), mtime)
            if output_dir is None:
                return data
            saved = save_transform(transform, transform_path(output_dir, index))
            return dataclasses.replace(data, transform=str(saved))
        return _party_file(data_file, index, os.stat(data_file).st_mtime_ns)
    d = cfg.dataset
    split = _split(d.name, d.n_parties, d.aligned_fraction, d.validation_fraction, d.test_fraction, cfg.seed)
    return split.parties[index]


def party_file(cfg: VerticalConfig, index: int, data_file: str | None = None) -> str | None:
    """The file party ``index`` reads: ``data_file`` if given, else ``party{index}.{npz,csv}`` in the
    configured ``dataset.data_dir`` (a folder used whole), else ``None`` (the bundled split).

    Raises
    ------
    FileNotFoundError
        If ``dataset.data_dir`` holds neither ``party{index}.npz`` nor ``party{index}.csv``, or both.
    ValueError
        If ``dataset.data_dir`` holds another number of party files than ``dataset.n_parties``.
    """
    if data_file is not None or not cfg.dataset.data_dir:
        return data_file
    found = [p for p in (Path(cfg.dataset.data_dir) / f"party{index}{s}" for s in (".npz", ".csv"))
             if p.is_file()]
    if len(found) != 1:
        raise FileNotFoundError(f"dataset.data_dir {cfg.dataset.data_dir} must hold exactly one of "
                                f"party{index}.npz / party{index}.csv, found {[p.name for p in found]}")
    check_party_count(cfg.dataset.data_dir, cfg.dataset.n_parties)  # the folder is used whole
    return str(found[0])


@functools.lru_cache(maxsize=2)
def _party_file(path: str, index: int, mtime_ns: int) -> PartyData:
    data = load_party_file(path, index)  # cached per path and modification time
    return dataclasses.replace(data, source=str(Path(path).resolve()), sha256=file_sha256(path))


@functools.lru_cache(maxsize=2)
def _party_csv(path: str, index: int, settings: tuple[tuple[str, str], ...],
               mtime_ns: int) -> tuple[PartyData, FeatureTransform]:
    data, transform = read_party_csv(path, index, dict(settings))  # cached per path, settings and mtime
    return dataclasses.replace(data, source=str(Path(path).resolve()), sha256=file_sha256(path)), transform


def node_party_data(context: Context, cfg: VerticalConfig) -> PartyData:
    """This node's party data, from ``node_config`` (``party``/``partition-id``, ``data-file`` and, for a
    CSV, ``id-column``, ``label-column``, ``classes``/``n-classes``, ``categories``); a CSV's fitted
    transform goes to the node's output folder (:func:`clients.node_output.node_output_dir`)."""
    configured = context.node_config.get(DATA_FILE_NODE_CONFIG_KEY)
    index = party_index(context, cfg.dataset.n_parties)
    data_file = party_file(cfg, index, None if configured is None else str(configured))
    reads_csv = data_file is not None and Path(data_file).suffix.lower() == ".csv"  # else nothing to write
    return party_data(cfg, index, data_file, context.node_config,
                      output_dir=node_output_dir(context) if reads_csv else None)


def load_party(context: Context, cfg: VerticalConfig) -> ActiveParty | PassiveParty:
    """Rebuild this node's party from its data and ``context.state``."""
    data = node_party_data(context, cfg)
    records = context.state.config_records
    blob = records[STATE_KEY]["blob"] if STATE_KEY in records else None
    return make_party(data, cfg, blob)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=8)
def decoded_config(items: tuple[tuple[str, Any], ...]) -> VerticalConfig:
    """A run's configuration from its record's items, decoded and validated once per process."""
    return from_record(VerticalConfig, dict(items))  # validated by VerticalConfig.__post_init__


def start_run(context: Context, record: ConfigRecord) -> VerticalConfig:
    """Decode and validate a run's configuration record, keep it in ``context.state``; fresh models.

    Raises
    ------
    ValueError
        If the record lacks a key, holds an unknown one, or a setting is out of range.
    """
    cfg = decoded_config(tuple(record.items()))
    context.state[CONFIG_STATE_KEY] = ConfigRecord(dict(record))
    context.state.pop(STATE_KEY, None)  # a new run starts from fresh models
    return cfg


def run_config(context: Context) -> VerticalConfig:
    """The configuration :func:`start_run` kept for this run (decoded once per process).

    Raises
    ------
    RuntimeError
        If no ``describe`` of a vertical run reached this node yet.
    """
    if CONFIG_STATE_KEY not in context.state.config_records:
        raise RuntimeError("no vertical run configured on this node yet: send query.vfl_describe first")
    return decoded_config(tuple(context.state.config_records[CONFIG_STATE_KEY].items()))


def load_ids(context: Context) -> list[str]:
    """This node's training IDs (what it brings to PSI); needs a prior ``describe`` of this run."""
    return node_party_data(context, run_config(context)).ids.tolist()


def psi_alignment(context: Context, party: ActiveParty | PassiveParty) -> tuple[list[str], str]:
    """The aligned IDs the PSI phase committed at this node (checked against the party's own ID list)
    and the alignment's ID, which the server compares across parties."""
    alignment = get_alignment(context)
    alignment.check_ids(party.data.ids.tolist())
    return [str(i) for i in alignment.ids], str(alignment.alignment_id)


def _handler(op: str, *, allow_plaintext_ids: bool) -> Callable[[Message, Context], Message]:
    def handle(msg: Message, context: Context) -> Message:
        if op == "ids" and not allow_plaintext_ids:
            raise PermissionError("this party does not hand out its raw IDs (insecure plaintext alignment); "
                                  "align with strategy.alignment=psi")
        torch.set_num_threads(1)  # models are tiny; intra-op threads only contend on shared cores
        cfg = start_run(context, config_record(msg.content)) if op == "describe" else run_config(context)
        party = load_party(context, cfg)
        payload: dict[str, Any] = decode_payload(msg.content)
        if op == "ids":
            reply: dict[str, Any] = {"ids": party.data.ids.tolist()}
        else:
            alignment_id = None
            if op == "save":  # the server names the file; the node decides the folder
                payload = {"path": str(node_file(context, payload.get("name"), "vertical save name"))}
            if op == "align" and payload.get("source") == "psi":
                aligned_ids, alignment_id = psi_alignment(context, party)
                payload = {"aligned_ids": aligned_ids}
            reply = party.handle(op, payload)
            if alignment_id is not None:
                reply["alignment_id"] = alignment_id
        if op == "reset":  # the settings it now trains with, for this run's later messages
            context.state[CONFIG_STATE_KEY] = ConfigRecord(to_flat(party.cfg))
        if op not in READ_ONLY_OPS:
            context.state[STATE_KEY] = ConfigRecord({"blob": party.state_bytes()})
        return Message(encode_payload(reply), reply_to=msg)

    handle.__name__ = f"handle_vfl_{op}"
    handle.__doc__ = f"Flower handler of the vertical protocol's ``{op}`` operation."
    return handle


def register_vertical_handlers(
    app: ClientApp, *, allow_insecure_psi_keys: bool = False, allow_plaintext_ids: bool = False,
    output_dir: str | Path | None = None,
) -> None:
    """Register one handler per protocol operation (:data:`protocol.vertical.MESSAGE_TYPES`) and
    the PSI alignment handlers (``query.psi_*``, with :func:`load_ids`).

    ``allow_insecure_psi_keys`` is for tests only: it lets this node accept Paillier keys below 2048 bits
    (see :func:`clients.psi.check_key_bits`). ``allow_plaintext_ids`` is for tests only too: without it
    the ``ids`` operation (raw IDs to the server, ``strategy.alignment=insecure_plaintext``) fails at the
    node, so a server cannot collect a party's ID set whatever it sends.
    """
    registrars = {"query": app.query, "train": app.train, "evaluate": app.evaluate}
    for op, message_type in MESSAGE_TYPES.items():
        kind, _, name = message_type.partition(".")
        handler = _handler(op, allow_plaintext_ids=allow_plaintext_ids)
        registrars[kind](name)(handler if output_dir is None else with_output_dir(handler, output_dir))
    register_psi_handlers(app, load_ids, allow_insecure_key_size=allow_insecure_psi_keys)
