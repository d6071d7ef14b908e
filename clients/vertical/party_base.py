"""The state and operations both vertical parties share (plain torch; no Flower here).

A party exposes the protocol as named operations, ``party.handle(op, payload) -> reply`` with payloads
of numpy arrays and scalars (a ``batch`` runs several in order, :func:`protocol.vertical.pack_batch`);
its whole state round-trips through :meth:`Party.state_bytes` / :meth:`Party.from_state` so a Flower
node can keep it in ``context.state`` between messages. The roles: :mod:`clients.vertical.active_party`,
:mod:`clients.vertical.passive_party`; :func:`clients.vertical.parties.make_party` builds either.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clients.encoders import build_encoder, check_model_size
from clients.training import check_inputs
from clients.vertical.data import PartyData
from clients.vertical.party_files import held_out_digest
from clients.vertical.prototypes import (
    smooth_prototypes,
)
from protocol.codec import to_flat
from protocol.vertical import (
    RESET_KEYS,
    VerticalConfig,
    pack_replies,
    unpack_batch,
    with_settings,
)

Payload = dict[str, Any]
SPLITS = ("val", "test")


def build_top_model(n_parties: int, feature_dim: int, hidden: int, n_classes: int) -> nn.Module:
    """Active party's top model on the concatenated party features (``hidden = 0``: linear)."""
    width = n_parties * feature_dim
    check_model_size((width, max(hidden, 1)), (max(hidden, 1), n_classes), what="top model")
    if hidden == 0:
        return nn.Linear(width, n_classes)
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def seeded_generator(*parts: int) -> torch.Generator:
    """A torch generator seeded from ``parts`` (run seed, epoch, step, purpose, …) by ``SeedSequence``."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(parts)).generate_state(1)[0]))


class Party:
    """State and operations common to both roles."""

    role = ""
    OPS: tuple[str, ...] = ()
    KEPT_ON_RESET: tuple[str, ...] = ()
    """State a ``reset`` keeps besides the data and the alignment (the label holder: its noise seed)."""

    def __init__(self, data: PartyData, cfg: VerticalConfig) -> None:
        if data.role != self.role:
            raise ValueError(f"{type(self).__name__} needs {self.role} data, got a {data.role} party")
        self.data, self.cfg = data, cfg
        m = cfg.model
        with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
            torch.manual_seed(cfg.seed * 1009 + data.index)
            self.encoder = build_encoder(data.input_shape, kind=m.encoder, feature_dim=m.feature_dim,
                                         hidden=m.hidden)
            self._build_extra()
        self.optimiser = torch.optim.Adam(self.parameters(), lr=cfg.strategy.lr,
                                          weight_decay=cfg.strategy.weight_decay)
        self.aligned_rows: np.ndarray | None = None
        self.nonaligned_rows = np.arange(len(data.ids))
        self.prototypes: torch.Tensor | None = None
        self.valid: torch.Tensor | None = None
        self.x = torch.from_numpy(check_inputs(data.x, data.input_shape, f"{data.name} features"))
        # trials kept by ``reset`` (``keep_as``) for a later ``restore``: index -> (state, settings)
        self.kept: dict[int, tuple[bytes, dict[str, Any]]] = {}

    def _build_extra(self) -> None:
        """Build role-specific modules (inside the seeded RNG scope)."""

    def parameters(self) -> list[nn.Parameter]:
        return list(self.encoder.parameters())

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder}

    # --- protocol operations -------------------------------------------------------------------
    def handle(self, op: str, payload: Payload) -> Payload:
        """Run operation ``op`` (see the class's ``OPS``) on ``payload``.

        Raises
        ------
        ValueError
            On an unknown operation or a malformed payload.
        RuntimeError
            On a training or evaluation operation before ``align``.
        """
        if op == "batch":
            ops = unpack_batch(payload)
            return pack_replies([name for name, _ in ops], [self.handle(name, sub) for name, sub in ops])
        if op not in self.OPS:
            raise ValueError(f"{self.role} party has no operation {op!r}; it has {self.OPS}")
        if op not in ("describe", "align") and self.aligned_rows is None:
            raise RuntimeError(f"{op!r} before alignment: run the alignment phase first")
        return getattr(self, f"op_{op}")(payload)

    def op_describe(self, payload: Payload) -> Payload:
        return {"role": self.role, "index": self.data.index, "n_rows": len(self.data.ids),
                "feature_dim": self.cfg.model.feature_dim}

    def op_align(self, payload: Payload) -> Payload:
        """Adopt the aligned IDs (shared canonical order) found by the alignment phase."""
        aligned = [str(i) for i in payload["aligned_ids"]]
        position = {user: row for row, user in enumerate(self.data.ids.tolist())}
        missing = [user for user in aligned if user not in position]
        if missing:
            raise ValueError(f"{len(missing)} aligned IDs are not held by {self.data.name}")
        if len(set(aligned)) != len(aligned):
            raise ValueError("aligned IDs contain duplicates")
        self.aligned_rows = np.array([position[u] for u in aligned], dtype=np.int64)
        self.nonaligned_rows = np.setdiff1d(np.arange(len(self.data.ids)), self.aligned_rows)
        return {"n_aligned": len(aligned), "n_nonaligned": len(self.nonaligned_rows),
                "n_classes": self.data.n_classes, "held_out_digest": held_out_digest(self.data),
                **self.data_description()}

    def op_reset(self, payload: Payload) -> Payload:
        """Start over with fresh models (the same seeded initial weights) and the strategy's
        :data:`protocol.vertical.RESET_KEYS` set to ``payload`` (:func:`protocol.vertical.with_settings`),
        keeping the data and the alignment: one tuning trial, or the run trained after them. Returns the
        aligned count (the server checks the parties agree).

        Two optional keys serve ``strategy.tune = auto``'s last rung (:mod:`strategies.vertical_tune`):
        ``keep_as`` (an int) first keeps the current trained state under that number; ``restore`` (an
        int) then loads the state kept under it instead of fresh models — the settings must be the ones
        it was trained with — and drops every kept state.

        Raises
        ------
        ValueError
            If the settings are incomplete or out of range, ``restore`` names no kept state, or its
            settings differ from the kept state's.
        """
        assert self.aligned_rows is not None
        settings = {key: value for key, value in payload.items() if key not in ("keep_as", "restore")}
        cfg = with_settings(self.cfg, settings)  # validated before anything is dropped
        kept = dict(self.kept)
        if "keep_as" in payload:
            kept[int(payload["keep_as"])] = (self.model_state_bytes(), self._settings())
        restore = int(payload["restore"]) if "restore" in payload else None
        if restore is not None:
            if restore not in kept:
                raise ValueError(f"reset restore={restore!r}: no such kept state (kept: {sorted(kept)})")
            if kept[restore][1] != {key: getattr(cfg.strategy, key) for key in RESET_KEYS}:
                raise ValueError(f"reset restore={restore!r}: settings {settings} differ from the kept "
                                 f"state's {kept[restore][1]}")
        aligned = self.data.ids[self.aligned_rows].tolist()
        kept_attributes = {name: getattr(self, name) for name in self.KEPT_ON_RESET}
        self.__init__(self.data, cfg)  # type: ignore[misc]  # fresh models, as when the run started
        self.__dict__.update(kept_attributes)
        reply = self.op_align({"aligned_ids": aligned})
        if restore is not None:
            self.load(torch.load(io.BytesIO(kept[restore][0]), weights_only=True))
        self.kept = {} if restore is not None else kept
        return {"n_aligned": reply["n_aligned"]}

    def _settings(self) -> dict[str, Any]:
        return {key: getattr(self.cfg.strategy, key) for key in RESET_KEYS}

    def data_description(self) -> Payload:
        """What this party's data is, for the run's record: the file read (absolute path, ``""`` for a
        bundled split) and its SHA-256, the train / validation / test row counts, the warnings found
        reading it (one per line), where its fitted feature transform went (``""``: none) and the class
        names of a label holder's CSV (one per line). The paths and the digest leave the node; the
        rows never do."""
        d = self.data
        return {"source": d.source, "sha256": d.sha256, "n_train": len(d.ids), "n_val": len(d.val_ids),
                "n_test": len(d.test_ids), "data_warnings": "\n".join(d.notes), "transform": d.transform,
                "class_names": "\n".join(d.class_names)}

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Features of ``x`` without a graph."""
        self.encoder.eval()
        with torch.no_grad():
            return self.encoder(x)

    def _positions(self, payload: Payload, key: str) -> list[np.ndarray]:
        """Rows of the minibatches ``payload[key]`` (a list of arrays of aligned positions)."""
        assert self.aligned_rows is not None
        out = []
        for batch in payload[key]:
            pos = np.asarray(batch, dtype=np.int64)
            if pos.ndim != 1 or (len(pos) and (pos.min() < 0 or pos.max() >= len(self.aligned_rows))):
                raise ValueError(f"{key} must be minibatches indexing the {len(self.aligned_rows)} aligned "
                                 f"users, got an array of shape {pos.shape}")
            out.append(self.aligned_rows[pos])
        return out

    def _split_x(self, split: str) -> torch.Tensor:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        x = self.data.val_x if split == "val" else self.data.test_x
        return torch.from_numpy(check_inputs(x, self.data.input_shape, f"{split} features"))

    def _smooth(self, prototypes: torch.Tensor, valid: torch.Tensor) -> None:
        self.prototypes, self.valid = smooth_prototypes(self.prototypes, self.valid, prototypes, valid,
                                                        self.cfg.strategy.ema)

    # --- persistence ---------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        out: dict[str, Any] = {name: module.state_dict() for name, module in self.modules().items()}
        out["optimiser"] = self.optimiser.state_dict()
        out["aligned_rows"] = None if self.aligned_rows is None else torch.from_numpy(self.aligned_rows)
        out["prototypes"], out["valid"] = self.prototypes, self.valid
        return out

    def load(self, state: dict[str, Any]) -> None:
        for name, module in self.modules().items():
            module.load_state_dict(state[name])
        self.optimiser.load_state_dict(state["optimiser"])
        if state["aligned_rows"] is not None:
            self.aligned_rows = state["aligned_rows"].numpy()
            self.nonaligned_rows = np.setdiff1d(np.arange(len(self.data.ids)), self.aligned_rows)
        self.prototypes, self.valid = state["prototypes"], state["valid"]

    def op_save(self, payload: Payload) -> Payload:
        """Write a self-contained model file (config, shapes, models, prototypes) to ``payload["path"]``."""
        path = Path(str(payload["path"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        record = {"config": to_flat(self.cfg), "role": self.role, "index": self.data.index,
                  "input_shape": list(self.data.input_shape), "n_classes": self.data.n_classes,
                  "modules": {name: m.state_dict() for name, m in self.modules().items()},
                  "prototypes": self.prototypes, "valid": self.valid, **self.saved_extras()}
        tmp = path.with_name(path.name + ".tmp")
        torch.save(record, tmp)
        os.replace(tmp, path)  # never a half-written model under the final name
        return {"path": str(path)}

    def saved_extras(self) -> dict[str, Any]:
        """Role-specific entries of the saved model file."""
        return {}

    def model_state_bytes(self) -> bytes:
        """The party's trained state (models, optimiser, alignment, prototypes, logs) as bytes."""
        buffer = io.BytesIO()
        torch.save(self.state(), buffer)
        return buffer.getvalue()

    def state_bytes(self) -> bytes:
        """The party's complete state as bytes: :meth:`model_state_bytes` and the kept trials' states."""
        buffer = io.BytesIO()
        torch.save({"state": self.state(), "kept": {
            index: (torch.frombuffer(bytearray(blob), dtype=torch.uint8), settings)
            for index, (blob, settings) in self.kept.items()}}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_state(cls, data: PartyData, cfg: VerticalConfig, blob: bytes | None) -> Party:
        """A party rebuilt from :meth:`state_bytes` output (a fresh one if ``blob`` is None)."""
        party = cls(data, cfg)
        if blob is not None:
            record = torch.load(io.BytesIO(blob), weights_only=True)
            party.load(record["state"])
            party.kept = {int(index): (kept.numpy().tobytes(), dict(settings))
                          for index, (kept, settings) in record["kept"].items()}
        return party
