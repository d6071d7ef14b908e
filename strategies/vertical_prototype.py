"""VerticalPrototype: the server side of vertical FL with prototype exchange (issue 5).

The server never holds party data or models: it relays features, gradients and prototypes between the
active party (label holder) and the passive parties, in phases:

1. **alignment** — an :data:`AlignmentPhase` (Paillier PSI over Flower, see :mod:`strategies.alignment`,
   or a direct intersection in the in-process benchmark) after which every party adopts the aligned IDs
   in one canonical order (operation ``align``); a run without split learning (the ``active_only``
   baseline) uses no aligned user and skips the phase (``n_aligned`` is ``None``);
2. **tuning** (``tune = auto``, the default where it applies) — successive halving over a small grid of
   the method's weights, every trial from fresh models (operation ``reset``) scored on the label holder's
   validation users, the last rung at full length and kept at the parties; the released model is the
   last-rung winner, restored (:mod:`strategies.vertical_tune`; recorded under ``tune``, its round trips
   under ``round_trips["tuning"]``);
3. **epochs** — aligned minibatches of split learning, ``steps_per_exchange`` per exchange (FedBCD), one
   prototype release per ``proto_every`` epochs (second prototypes go only to the party whose feature
   space they live in) and one local pass at the active party (local head + first loss); the passive
   parties' third loss rides on their split-learning steps (see :mod:`clients.vertical`).
   Operations that need no reply ride in the party's next message (a ``batch``); every
   :meth:`PartyLink.request` is one round trip and the results count them per phase;
4. **evaluation** — with ``fusion_selection = validation`` the active party first picks how to fuse its
   predictors on its validation users (:func:`protocol.vertical.fusion_candidates`) and, with ``guard =
   validation``, per population (aligned users, users only it holds) the better of the method's
   predictor and its local-only baseline on them (``clients.vertical.guard``; the same message, no
   extra round trip when fusion is selected too; recorded under ``guard``); then validation and test
   accuracy for aligned, active-only and passive-only users (``None`` where no predictor of the run covers
   them), with each one's per-class recall and confusion matrix; the label-inference attacks measured at
   every passive party (prototype, gradient and forward-embedding attacks); the label-DP ε of the
   prototype releases and of everything a passive party receives.

At alignment the parties also report their number of classes and a digest of their validation/test
IDs; a run whose parties disagree stops with :class:`VerticalProtocolError` (e.g. nodes given data
files of different deployments).

Parties are reached through a :class:`PartyLink`: :class:`InProcessLink` calls party objects directly
(benchmarks), :class:`strategies.vertical_flower.FlowerLink` sends one Flower ``Message`` per party per
step (:func:`strategies.vertical_flower.run_vertical` is the ServerApp's entry). A party that fails (an
error reply) or vanishes (no reply within the timeout) ends the run with :class:`VerticalProtocolError`.

The server reads only :mod:`protocol.vertical` (config, message types, payloads) and pure-numpy/math
server code (:mod:`strategies.label_dp`, :mod:`strategies.alignment`): no party module, no torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import PurePath
from typing import Any, Protocol

import numpy as np

from protocol.vertical import (
    ACTIVE,
    GUARDED_POPULATIONS,
    VerticalConfig,
    configured_fusion,
    pack_batch,
    unpack_batch,
    with_settings,
)
from strategies.label_dp import gradient_batch_epsilon, label_dp_epsilon
from strategies.vertical_tune import BASELINE, PassiveView, run_tuning, served_validation, versus_baseline

Payload = dict[str, Any]
Calls = Mapping[str, tuple[str, Payload]]
ATTACK_KEYS = ("exact", "nearest", "grad_norm", "grad_direction", "grad_direction_chance", "fwd_cluster",
               "fwd_cluster_untrained", "fwd_cluster_best", "fwd_cluster_best_chance")
"""The attack measurements reported per passive party and as the worst case over them
(``clients.vertical.active_serving.ActiveServing.op_score`` defines each)."""


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


class CountingLink:
    """A :class:`PartyLink` that counts its round trips (one per :meth:`request`, however many parties)."""

    def __init__(self, link: PartyLink) -> None:
        self._link = link
        self.parties = link.parties
        self.round_trips = 0

    def request(self, calls: Calls) -> dict[str, Payload]:
        self.round_trips += 1
        return self._link.request(calls)


def send_batches(link: PartyLink, ops: Mapping[str, list[tuple[str, Payload]]]) -> dict[str, list[Payload]]:
    """One round trip: party ``name`` runs ``ops[name]`` in order (a ``batch`` if more than one);
    return each party's replies in the same order."""
    calls = {name: seq[0] if len(seq) == 1 else ("batch", pack_batch(seq)) for name, seq in ops.items()}
    replies = link.request(calls)
    return {name: [replies[name]] if len(seq) == 1 else [r for _, r in unpack_batch(replies[name])]
            for name, seq in ops.items()}


def per_class(confusion: np.ndarray) -> dict[str, Any]:
    """Recall of every class (``None`` for a class without users) and the confusion matrix (rows: true
    class, columns: predicted class) as lists, from a matrix of counts."""
    counts = np.asarray(confusion, dtype=np.int64)
    users = counts.sum(axis=1)
    recall = [float(counts[c, c] / users[c]) if users[c] else None for c in range(len(counts))]
    return {"recall": recall, "confusion": counts.tolist()}


def passive_names(n_parties: int) -> list[str]:
    """Names of the passive parties, ``passive1 … passive{n-1}`` (party ``k`` is data party index ``k``)."""
    return [f"passive{k}" for k in range(1, n_parties)]


class VerticalPrototype:
    """Runs the vertical prototype exchange over a :class:`PartyLink`.

    Parameters
    ----------
    cfg : VerticalConfig
        The run's configuration (``cfg.strategy`` holds the protocol settings), validated when built.
    on_epoch : Callable[[int, dict], None], optional
        Called after every epoch with the epoch index and its metrics (live progress).
    """

    def __init__(
        self, cfg: VerticalConfig, *, on_epoch: Callable[[int, dict[str, float | None]], None] | None = None
    ) -> None:
        self.cfg = cfg
        self.on_epoch = on_epoch
        self.passives = passive_names(cfg.dataset.n_parties)
        # per run: operations riding in each passive party's next message, its held-out predictions
        self._deferred: dict[str, list[tuple[str, Payload]]] = {}
        self._predictions: dict[str, dict[str, Payload]] = {}
        self._per_class: dict[str, dict[str, dict[str, Any] | None]] = {}

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
        link = CountingLink(link)
        self._deferred = {name: [] for name in self.passives}
        self._predictions = {}
        if s.split_learning:
            align_payloads = alignment(link)
        else:  # the active_only baseline uses no alignment: no PSI; every party adopts an empty set
            align_payloads = {name: {"aligned_ids": []} for name in link.parties}
        aligned = link.request({name: ("align", align_payloads[name]) for name in link.parties})
        n_aligned = int(aligned[ACTIVE]["n_aligned"])
        if any(int(r["n_aligned"]) != n_aligned for r in aligned.values()):
            raise VerticalProtocolError(f"parties disagree on the aligned set size: "
                                        f"{ {k: r['n_aligned'] for k, r in aligned.items()} }")
        for key, what in (("n_classes", "numbers of classes"), ("held_out_digest", "validation/test users")):
            values = {name: r[key] for name, r in aligned.items()}
            if len(set(values.values())) > 1:
                raise VerticalProtocolError(f"parties hold different {what}: {values}")
        alignment_ids = {r["alignment_id"] for r in aligned.values() if "alignment_id" in r}
        if len(alignment_ids) > 1:  # e.g. the server died between PSI commits on a previous attempt
            raise VerticalProtocolError(f"parties hold different PSI alignments: {sorted(alignment_ids)}")
        if n_aligned == 0 and s.split_learning:
            raise VerticalProtocolError("the alignment found no common user: split learning needs some")
        aligned_trips = link.round_trips
        tuning, kept = self._tune(link, n_aligned) if s.tune == "auto" else (None, None)
        if tuning is not None:  # the released run: the chosen settings, the winner's trial restored
            self.cfg = with_settings(self.cfg, tuning["settings"])
            s = self.cfg.strategy
        # the restored last-rung trial is the released model: its training round trips count as training
        tuning_trips = link.round_trips - aligned_trips - (kept["training_round_trips"] if kept else 0)
        if kept is None:
            history, releases = self._train(link, n_aligned, np.random.default_rng(self.cfg.seed))
        else:
            history, releases = kept["history"], kept["prototype_releases"]
            for epoch, metrics in enumerate(history) if self.on_epoch is not None else ():
                self.on_epoch(epoch, metrics)
        training_trips = link.round_trips - aligned_trips - tuning_trips
        # without split learning the active party predicts every user with its local head alone, the
        # fusion it holds from its settings (the one its saved model stores)
        fusion = self._select_fusion(link) if s.split_learning else {"fusion": list(configured_fusion(s))}
        self._per_class = {}
        evaluation = {split: self._evaluate(link, split) for split in ("val", "test")}
        results: dict[str, Any] = {
            **fusion,
            "data": self._data_record(aligned, n_aligned if s.split_learning else None),
            "n_aligned": n_aligned if s.split_learning else None,  # None: no alignment was run
            "n_nonaligned": {k: int(r["n_nonaligned"]) for k, r in aligned.items()},
            "history": history,
            **evaluation,
            "per_class": self._per_class,
            "prototype_releases": releases,
            "label_dp_epsilon": label_dp_epsilon(s.noise(), releases, len(self.passives), s.dp_delta),
            "label_dp_delta": s.dp_delta,
            # one gradient batch returned to one passive party (clipped and noised), given the label
            # holder's state at that step: no composition over the run (``gradient_protection``)
            "grad_batch_epsilon": gradient_batch_epsilon(s.grad_noise, s.dp_delta),
            # everything a passive party receives (gradients too): ε of the labels' randomised response
            "passive_view_epsilon": (0.0 if not s.split_learning else
                                     s.label_rr_epsilon if s.label_rr_epsilon > 0 else math.inf),
        }
        if s.attack and s.split_learning:
            results["attack"] = self._measure_attacks(link, releases)
        results["steps_per_exchange"] = s.steps_per_exchange
        evaluation_trips = link.round_trips - aligned_trips - tuning_trips - training_trips
        results["round_trips"] = {"alignment": aligned_trips, "training": training_trips,
                                  "evaluation": evaluation_trips}
        if tuning is not None:
            tuning["round_trips"] = tuning_trips  # the trials' but the released model's training
            tuning["versus_" + BASELINE] = versus_baseline(
                served_validation(results["val"], results.get("guard")), tuning[BASELINE]["served_val"])
            results["round_trips"]["tuning"] = tuning_trips
            results["tune"] = tuning
        results["round_trips_per_epoch"] = training_trips / s.epochs
        results["wall_s"] = time.perf_counter() - start
        return results

    def _tune(self, link: CountingLink, n_aligned: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """``tune = auto``: successive halving over the grid (:func:`strategies.vertical_tune.run_tuning`),
        each trial from fresh models at every party, each last-rung trial kept there; then one ``reset``
        keeping the last trial and restoring the winner's trained state (the released model). Returns the
        ``tune`` record and the winner's trial (its history, releases and training round trips)."""
        trials: list[dict[str, Any]] = []

        def trial(settings: Payload, keep_as: int | None) -> dict[str, Any]:
            trials.append(self._trial(link, n_aligned, settings, keep_as))
            return trials[-1]

        tuning = run_tuning(self.cfg.strategy, trial)
        released = tuning["released"]["trial"]
        self._reset(link, {**tuning["settings"], "keep_as": len(trials) - 1, "restore": released}, n_aligned)
        return tuning, trials[released]

    def _reset(self, link: PartyLink, settings: Payload, n_aligned: int) -> None:
        """Every party starts over with fresh models and ``settings`` (one round trip); ``keep_as`` /
        ``restore`` in ``settings``: see ``clients.vertical.party_base.Party.op_reset``."""
        replies = link.request({name: ("reset", dict(settings)) for name in link.parties})
        if any(int(r["n_aligned"]) != n_aligned for r in replies.values()):
            raise VerticalProtocolError(f"parties lost their alignment at reset: "
                                        f"{ {k: r['n_aligned'] for k, r in replies.items()} }")

    def _trial(self, link: CountingLink, n_aligned: int, settings: Payload, keep_as: int | None
               ) -> dict[str, Any]:
        """One tuning trial: reset (first keeping the previous trial's state as ``keep_as`` if given), train
        with ``settings``, choose the fusion (and the guard) and evaluate on validation users only; its
        accuracies, guard record, history, round trips (all, and its training's) and the passive view."""
        start = link.round_trips
        view = PassiveView(link, self.passives)
        self._reset(view, settings if keep_as is None else {**settings, "keep_as": keep_as}, n_aligned)
        trial = VerticalPrototype(with_settings(self.cfg, settings))
        trial._deferred = {name: [] for name in self.passives}
        trained_from = link.round_trips
        history, releases = trial._train(view, n_aligned, np.random.default_rng(self.cfg.seed))
        training_trips = link.round_trips - trained_from
        selected = trial._select_fusion(view)
        val = trial._evaluate(view, "val")
        return {"val": val, "guard": selected.get("guard"), "fusion": selected["fusion"], "history": history,
                "prototype_releases": releases, "round_trips": link.round_trips - start,
                "training_round_trips": training_trips, "passive_view": view.counts}

    def _data_record(self, aligned: Mapping[str, Payload], n_aligned: int | None) -> dict[str, Any]:
        """What the run trained on, from the parties' ``align`` replies: per party the file it read and
        its SHA-256, its train / validation / test row counts, its reading warnings and where its fitted
        feature transform was written (``None``: no CSV, or no output folder); the folder of
        the files (``dataset.data_dir``, else the one folder every party's file is in, else ``None``);
        the aligned count found. A run on the bundled split records its name and fractions instead."""
        d = self.cfg.dataset
        parties = {name: {"file": str(r.get("source", "")) or None,
                          "sha256": str(r.get("sha256", "")) or None,
                          "rows": {split: int(r[f"n_{split}"]) for split in ("train", "val", "test")},
                          "warnings": [w for w in str(r.get("data_warnings", "")).split("\n") if w],
                          "transform": str(r.get("transform", "")) or None}
                   for name, r in sorted(aligned.items(), key=lambda item: item[0] != ACTIVE)}
        files = [p["file"] for p in parties.values() if p["file"]]
        if not files:
            source: dict[str, Any] = {"dataset": d.name, "aligned_fraction": d.aligned_fraction,
                                      "validation_fraction": d.validation_fraction,
                                      "test_fraction": d.test_fraction}
        else:
            folders = {str(PurePath(f).parent) for f in files}
            source = {"folder": d.data_dir or (folders.pop() if len(folders) == 1 else None)}
        names = str(aligned[ACTIVE].get("class_names", "")) if ACTIVE in aligned else ""
        return {**source, "n_aligned": n_aligned, "classes": names.split("\n") if names else None,
                "parties": parties}

    def _train(self, link: PartyLink, n_aligned: int, rng: np.random.Generator) -> tuple[list[dict], int]:
        """Every epoch: the aligned exchanges, a prototype release every ``proto_every`` epochs and the
        active party's local pass; return the per-epoch metrics and the number of releases.

        Operations whose replies the server does not wait for (a passive party applying its last
        gradients, taking its prototypes) ride in the party's next message as a ``batch`` (after the
        last epoch: its first evaluation message); the active party's local pass rides with its last
        exchange of the epoch or its prototype computation. Each party computes the same things in the
        same order as with one message per operation.
        """
        s = self.cfg.strategy
        deferred = self._deferred
        history, releases = [], 0
        for epoch in range(s.epochs):
            metrics: dict[str, float | None] = {"epoch": epoch}
            if s.split_learning:
                release = s.prototypes and epoch % s.proto_every == 0
                metrics["loss"], local = self._aligned_epoch(link, rng.permutation(n_aligned), epoch,
                                                             deferred, release)
                if release:
                    metrics["n_valid"], local = self._exchange_prototypes(link, epoch, deferred)
                    releases += 1
            else:
                local = link.request({ACTIVE: ("local", {"epoch": epoch})})[ACTIVE]
            metrics["local_loss"] = float(local["loss"]) if "loss" in local else None  # None: no local pass
            history.append(metrics)
            if self.on_epoch is not None:
                self.on_epoch(epoch, metrics)
        return history, releases

    def _aligned_epoch(
        self, link: PartyLink, order: np.ndarray, epoch: int, deferred: dict[str, list[tuple[str, Payload]]],
        release: bool,
    ) -> tuple[float, Payload]:
        """Split learning over one permutation of the aligned users, ``steps_per_exchange`` minibatches
        per exchange; return the mean top-model loss and the active party's local-pass reply (empty if a
        prototype release follows, which carries the local pass).

        One exchange: every passive party applies the gradients of the previous exchange (deferred)
        and returns its features of the next K minibatches; the active party takes K steps on them and
        returns each passive party its K gradients, applied in the party's next message.
        """
        s = self.cfg.strategy
        bs = s.aligned_batch_size
        batches = [order[i:i + bs] for i in range(0, len(order), bs)]
        k = s.steps_per_exchange or len(batches)
        groups = [batches[i:i + k] for i in range(0, len(batches), k)]
        total, local = 0.0, {}
        for g, group in enumerate(groups):
            replies = send_batches(link, {name: [*deferred[name], ("step", {"positions": group})]
                                          for name in self.passives})
            active_ops: list[tuple[str, Payload]] = [("step", {
                "positions": group, "epoch": epoch,
                "passive_features": [replies[name][-1]["features"] for name in self.passives]})]
            if g == len(groups) - 1 and not release:
                active_ops.append(("local", {"epoch": epoch}))
            reply = send_batches(link, {ACTIVE: active_ops})[ACTIVE]
            for loss, batch in zip(reply[0]["losses"], group, strict=True):
                total += float(loss) * len(batch)
            local = reply[-1] if len(reply) > 1 else {}
            for name, grad in zip(self.passives, reply[0]["grads"], strict=True):
                deferred[name] = [("step", {"grad_positions": group, "grad": grad, "epoch": epoch,
                                            "step": g * k})]
        return total / len(order), local

    def _exchange_prototypes(
        self, link: PartyLink, epoch: int, deferred: dict[str, list[tuple[str, Payload]]]
    ) -> tuple[float, Payload]:
        """Snapshot (after the deferred gradients) → prototypes and the local pass at the active party;
        each passive party's own set (only) is deferred to its next message. Returns the number of
        classes with an own prototype and the local-pass reply."""
        snaps = send_batches(link, {name: [*deferred[name], ("snapshot", {})] for name in self.passives})
        feats = [snaps[name][-1]["features"] for name in self.passives]
        protos, local = send_batches(link, {ACTIVE: [("prototypes", {"passive_features": feats}),
                                                     ("local", {"epoch": epoch})]})[ACTIVE]
        for name, prototypes, valid in zip(self.passives, protos["prototypes"], protos["valid"], strict=True):
            deferred[name] = [("receive", {"prototypes": prototypes, "valid": valid})]
        return float(protos["n_valid_own"]), local

    def _select_fusion(self, link: PartyLink) -> dict[str, Any]:
        """With ``fusion_selection = validation``: the active party picks its fusion on validation users;
        with ``guard = validation`` (same message): per population, the method's predictor or its local-only
        baseline, recorded as ``guard: {population: {chosen, method_val, local_val}}``."""
        s = self.cfg.strategy
        if s.fusion_selection != "validation" and s.guard != "validation":
            return {"fusion": list(configured_fusion(s))}
        preds = self._passive_predictions(link, "val")
        reply = link.request({ACTIVE: ("select_fusion", {
            "passive_features": [preds[name]["features"] for name in self.passives]})})[ACTIVE]
        out: dict[str, Any] = {"fusion": [float(w) for w in reply["fusion"]]}
        if s.fusion_selection == "validation":
            out["fusion_candidates"] = [[float(w) for w in c] for c in reply["candidates"]]
            out["fusion_val_accuracies"] = [float(a) for a in reply["val_accuracies"]]
        if s.guard == "validation":
            out["guard"] = {population: {"chosen": str(reply[f"guard_{population}_chosen"]),
                                         **{key: float(reply[f"guard_{population}_{key}"])
                                            for key in ("method_val", "local_val")}}
                            for population in GUARDED_POPULATIONS}
        return out

    def _passive_predictions(self, link: PartyLink, split: str) -> dict[str, Payload]:
        """Every passive party's features and classes of the ``split`` users (asked once per split; the
        first request also carries the operations deferred from the last epoch)."""
        if split not in self._predictions:
            replies = send_batches(link, {name: [*self._deferred[name], ("predict", {"split": split})]
                                          for name in self.passives})
            self._deferred = {name: [] for name in self.passives}
            self._predictions[split] = {name: replies[name][-1] for name in self.passives}
        return self._predictions[split]

    def _evaluate(self, link: PartyLink, split: str) -> dict[str, float | None]:
        """Accuracy of every population on ``split``: ``aligned``, ``active_only`` and ``passive_only_k``
        for each passive party, ``None`` where no predictor of this run covers it (e.g. passive-only
        users without prototypes)."""
        payload: Payload = {"split": split}
        if self.cfg.strategy.split_learning:
            preds = self._passive_predictions(link, split)
            payload["passive_features"] = [preds[name]["features"] for name in self.passives]
            payload["passive_classes"] = [preds[name]["classes"] for name in self.passives]
        reply = link.request({ACTIVE: ("evaluate", payload)})[ACTIVE]
        names = ["aligned", "active_only", *(f"passive_only_{k}" for k in range(1, len(self.passives) + 1))]
        self._per_class[split] = {name: per_class(reply[f"confusion_{name}"]) if f"confusion_{name}" in reply
                                  else None for name in names}
        return {name: float(reply[name]) if name in reply else None for name in names}

    def _measure_attacks(self, link: PartyLink, releases: int) -> dict[str, float]:
        """Each passive party's attack guesses, scored by the active party (measurement only): the
        gradient and forward-embedding attacks always, the prototype attacks after a release; per party
        and the worst case (the largest value over parties of every key in :data:`ATTACK_KEYS`)."""
        guesses = link.request({name: ("attack", {}) for name in self.passives})
        out: dict[str, float] = {}
        for name in self.passives:
            score = link.request({ACTIVE: ("score", guesses[name])})[ACTIVE]
            if not releases:
                score = {k: v for k, v in score.items() if k not in ("exact", "nearest")}
            out.update({f"{name}_{k}": float(v) for k, v in score.items()})
        for key in ATTACK_KEYS:
            values = [out[f"{n}_{key}"] for n in self.passives if f"{n}_{key}" in out]
            if values:
                out[key] = max(values)
        return out
