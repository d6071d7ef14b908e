"""VerticalPrototype: the server side of vertical FL with prototype exchange (issue 5, DESIGN.md §4).

The server never holds party data or models: it relays features, gradients and prototypes between the
active party (label holder) and the passive parties, in phases:

1. **alignment** — an :data:`AlignmentPhase` (Paillier PSI over Flower, see :mod:`strategies.alignment`,
   or a direct intersection in the in-process benchmark) after which every party adopts the aligned IDs
   in one canonical order (operation ``align``);
2. **epochs** — aligned minibatches of split learning, one prototype release per ``proto_every`` epochs
   (second prototypes go only to the party whose feature space they live in) and one local pass with the
   prototype losses on non-aligned rows (see :mod:`clients.vertical_training`);
3. **evaluation** — validation and test accuracy for aligned, active-only and passive-only users; the
   label-inference attacks measured at every passive party; the label-DP ε of the prototype releases.

Parties are reached through a :class:`PartyLink`: :class:`InProcessLink` calls party objects directly
(benchmarks), :class:`FlowerLink` sends one Flower ``Message`` per party per step. A party that fails
(an error reply) or vanishes (no reply within the timeout) ends the run with :class:`VerticalProtocolError`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from clients.prototype_privacy import label_dp_epsilon
from simulations.vertical_config import VerticalConfig

Payload = dict[str, Any]
Calls = Mapping[str, tuple[str, Payload]]
ACTIVE = "active"


class VerticalProtocolError(RuntimeError):
    """A party failed or vanished during the vertical protocol."""


class PartyLink(Protocol):
    """Sends one operation to each of several parties at once and returns their replies by party name."""

    parties: list[str]

    def request(self, calls: Calls) -> dict[str, Payload]:
        """Run ``calls[name] = (op, payload)`` at every named party.

        Raises VerticalProtocolError if a party fails or does not reply.
        """
        ...


AlignmentPhase = Callable[[PartyLink], dict[str, Payload]]
"""Runs the ID alignment; returns each party's payload for its ``align`` operation."""


class InProcessLink:
    """A :class:`PartyLink` over party objects living in this process (benchmarks and unit tests)."""

    def __init__(self, parties: Mapping[str, Any]) -> None:
        self._parties = dict(parties)
        self.parties = list(self._parties)

    def request(self, calls: Calls) -> dict[str, Payload]:
        replies = {}
        for name, (op, payload) in calls.items():
            try:
                replies[name] = self._parties[name].handle(op, payload)
            except Exception as err:
                raise VerticalProtocolError(f"party {name} failed operation {op!r}: {err}") from err
        return replies


def passive_names(n_parties: int) -> list[str]:
    """Names of the passive parties, ``passive1 … passive{n-1}`` (party ``k`` is data party index ``k``)."""
    return [f"passive{k}" for k in range(1, n_parties)]


class VerticalPrototype:
    """Runs the vertical prototype exchange over a :class:`PartyLink`.

    Parameters
    ----------
    cfg : VerticalConfig
        The run's configuration (``cfg.strategy`` holds the protocol settings).
    on_epoch : Callable[[int, dict], None], optional
        Called after every epoch with the epoch index and its metrics (live progress).
    """

    def __init__(
        self, cfg: VerticalConfig, *, on_epoch: Callable[[int, dict[str, float]], None] | None = None
    ) -> None:
        self.cfg = cfg.validate()
        self.on_epoch = on_epoch
        self.passives = passive_names(cfg.dataset.n_parties)

    def run(self, link: PartyLink, alignment: AlignmentPhase) -> dict[str, Any]:
        """Alignment, ``cfg.strategy.epochs`` epochs, evaluation; return the results dict.

        Raises
        ------
        VerticalProtocolError
            If a party fails or does not reply.
        ValueError
            If the link's parties do not match the configuration.
        """
        expected = {ACTIVE, *self.passives}
        if set(link.parties) != expected:
            raise ValueError(f"link has parties {sorted(link.parties)}, "
                             f"configuration needs {sorted(expected)}")
        s = self.cfg.strategy
        start = time.perf_counter()
        align_payloads = alignment(link)
        aligned = link.request({name: ("align", align_payloads[name]) for name in link.parties})
        n_aligned = int(aligned[ACTIVE]["n_aligned"])
        if any(int(r["n_aligned"]) != n_aligned for r in aligned.values()):
            raise VerticalProtocolError(f"parties disagree on the aligned set size: "
                                        f"{ {k: r['n_aligned'] for k, r in aligned.items()} }")
        if n_aligned == 0 and s.split_learning:
            raise VerticalProtocolError("the alignment found no common user: split learning needs some")
        rng = np.random.default_rng(self.cfg.seed)
        history = []
        releases = 0
        for epoch in range(s.epochs):
            metrics: dict[str, float] = {"epoch": epoch}
            if s.split_learning:
                metrics["loss"] = self._aligned_epoch(link, rng.permutation(n_aligned))
                if s.prototypes and epoch % s.proto_every == 0:
                    metrics["n_valid"] = self._exchange_prototypes(link)
                    releases += 1
            local = link.request({name: ("local", {"epoch": epoch}) for name in self._local_parties()})
            metrics.update({f"{name}_{key}": float(v) for name, r in local.items() for key, v in r.items()})
            history.append(metrics)
            if self.on_epoch is not None:
                self.on_epoch(epoch, metrics)
        results: dict[str, Any] = {
            "n_aligned": n_aligned,
            "n_nonaligned": {k: int(r["n_nonaligned"]) for k, r in aligned.items()},
            "history": history,
            "val": self._evaluate(link, "val"),
            "test": self._evaluate(link, "test"),
            "prototype_releases": releases,
            "label_dp_epsilon": label_dp_epsilon(s.noise(), releases, len(self.passives), s.dp_delta),
            "label_dp_delta": s.dp_delta,
        }
        if s.attack and releases:
            results["attack"] = self._measure_attacks(link)
        results["wall_s"] = time.perf_counter() - start
        return results

    def _local_parties(self) -> list[str]:
        s = self.cfg.strategy
        return [ACTIVE, *self.passives] if s.prototypes else [ACTIVE]

    def _aligned_epoch(self, link: PartyLink, order: np.ndarray) -> float:
        """Split learning over one permutation of the aligned users; return the mean top-model loss.

        The passive parties' gradient of batch ``b`` travels in the same message as the request for the
        features of batch ``b + 1`` (two round trips per batch instead of three).
        """
        bs = self.cfg.strategy.aligned_batch_size
        batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        losses = []
        pending: dict[str, Payload] = {name: {} for name in self.passives}
        for batch in batches:
            calls = {name: ("step", {**pending[name], "positions": batch}) for name in self.passives}
            feats = link.request(calls)
            reply = link.request({ACTIVE: ("step", {"positions": batch, "passive_features":
                                                    [feats[name]["features"] for name in self.passives]})})
            losses.append(float(reply[ACTIVE]["loss"]) * len(batch))
            pending = {name: {"grad_positions": batch, "grad": grad}
                       for name, grad in zip(self.passives, reply[ACTIVE]["grads"], strict=True)}
        link.request({name: ("step", pending[name]) for name in self.passives})
        return sum(losses) / len(order)

    def _exchange_prototypes(self, link: PartyLink) -> float:
        """Snapshot → prototypes at the active party → each passive party receives its own set only."""
        snaps = link.request({name: ("snapshot", {}) for name in self.passives})
        feats = [snaps[name]["features"] for name in self.passives]
        reply = link.request({ACTIVE: ("prototypes", {"passive_features": feats})})[ACTIVE]
        link.request({name: ("receive", {"prototypes": protos, "valid": valid})
                      for name, protos, valid in zip(self.passives, reply["prototypes"], reply["valid"],
                                                     strict=True)})
        return float(reply["n_valid_own"])

    def _evaluate(self, link: PartyLink, split: str) -> dict[str, float]:
        payload: Payload = {"split": split}
        if self.cfg.strategy.split_learning:
            preds = link.request({name: ("predict", {"split": split}) for name in self.passives})
            payload["passive_features"] = [preds[name]["features"] for name in self.passives]
            payload["passive_classes"] = [preds[name]["classes"] for name in self.passives]
        return {k: float(v) for k, v in link.request({ACTIVE: ("evaluate", payload)})[ACTIVE].items()}

    def _measure_attacks(self, link: PartyLink) -> dict[str, float]:
        """Each passive party's attack guesses, scored by the active party (measurement only)."""
        guesses = link.request({name: ("attack", {}) for name in self.passives})
        out: dict[str, float] = {}
        for name in self.passives:
            score = link.request({ACTIVE: ("score", guesses[name])})[ACTIVE]
            out.update({f"{name}_{k}": float(v) for k, v in score.items()})
        out["exact"] = max(out[f"{n}_exact"] for n in self.passives)
        out["nearest"] = max(out[f"{n}_nearest"] for n in self.passives)
        return out
