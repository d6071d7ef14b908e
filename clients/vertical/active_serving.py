"""What the active party serves and measures: its predictions for aligned and active-only users (with
the guard's choice), the fusion chosen on validation users, the evaluation per population, and the scoring
of the passive parties' label attacks (a mixin of :class:`clients.vertical.active_party.ActiveParty`;
plain torch)."""

from __future__ import annotations

import numpy as np
import torch

from clients.vertical.embedding_attacks import best_mapping_accuracy, cluster_guesses, permutation_chance
from clients.vertical.fusion import choose_fusion, fuse
from clients.vertical.gradient_attacks import direction_guesses, score_norm_attack
from clients.vertical.guard import LocalBaseline, apply_choice, choose_predictors, population_sigmas
from clients.vertical.party_base import Party, Payload
from clients.vertical.prototypes import nearest_prototype
from protocol.vertical import Fusion, fusion_candidates


class ActiveServing(Party):
    """Prediction, fusion choice, evaluation and attack scoring of
    :class:`~clients.vertical.active_party.ActiveParty` (state set in its ``__init__``)."""

    y: torch.Tensor
    fusion: Fusion
    guard: dict[str, str]
    baseline: LocalBaseline | None
    head: torch.nn.Module
    top: torch.nn.Module

    def predict(
        self, x: torch.Tensor, passive_features: list[torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """Classes served to aligned users and active-only users: the method's
        (:meth:`method_predictions`), or the local-only baseline's where the guard chose it."""
        method = self.method_predictions(x, passive_features)
        if self.baseline is None or not self.guard:
            return method
        return apply_choice(method, self.baseline_predictions(x), self.guard)

    def baseline_predictions(self, x: torch.Tensor) -> torch.Tensor:
        """Classes of the local-only baseline (its head on its own encoder's features of ``x``)."""
        assert self.baseline is not None
        return self.baseline.predict(x)

    def method_predictions(
        self, x: torch.Tensor, passive_features: list[torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """The method's classes of aligned users (all parties, fused by ``self.fusion``) and of active-only
        users (local head, else nearest prototype, else ``-1``)."""
        s = self.cfg.strategy
        components = self.components(x, passive_features)
        if s.local_head:
            active_only = components["head"].argmax(dim=1)
        elif self.prototypes is not None and self.valid is not None:
            active_only = nearest_prototype(self.encode(x), self.prototypes, self.valid)
        else:
            active_only = torch.full((len(x),), -1, dtype=torch.long)
        if "top" not in components:
            return {"aligned": active_only, "active_only": active_only}
        return {"aligned": fuse(components, self.fusion).argmax(dim=1), "active_only": active_only}

    def components(
        self, x: torch.Tensor, passive_features: list[torch.Tensor] | None
    ) -> dict[str, torch.Tensor]:
        """Log-probabilities of the local head and, given passive features, the top model and prototypes."""
        features = self.encode(x)
        self.head.eval()
        self.top.eval()
        with torch.no_grad():
            out = {"head": torch.log_softmax(self.head(features), dim=1)}
            if self.cfg.strategy.split_learning and passive_features is not None:
                joint = torch.cat([features, *passive_features], dim=1)
                out["top"] = torch.log_softmax(self.top(joint), dim=1)
                out["proto"] = self.prototype_scores(passive_features)
        return out

    def op_select_fusion(self, payload: Payload) -> Payload:
        """Keep the candidate fusion (``protocol.vertical.fusion_candidates``) best on my validation users;
        then, with the guard, per population the better of the method's predictor and the local-only
        baseline on them (``guard_<population>_{chosen,method_val,local_val}`` in the reply)."""
        assert self.data.val_y is not None
        x = self._split_x("val")
        passive = self._passive_features(payload, len(x))
        labels = torch.from_numpy(np.asarray(self.data.val_y, dtype=np.int64))
        candidates = fusion_candidates(self.cfg.strategy)
        self.fusion, accuracies = choose_fusion(self.components(x, passive), labels, candidates)
        reply: Payload = {"fusion": np.array(self.fusion), "candidates": np.array(candidates),
                          "val_accuracies": np.array(accuracies)}
        if self.baseline is not None:
            record = choose_predictors(self.method_predictions(x, passive), self.baseline_predictions(x),
                                       labels, population_sigmas(self.cfg.strategy))
            self.guard = {population: str(r["chosen"]) for population, r in record.items()}
            reply.update({f"guard_{population}_{key}": value for population, r in record.items()
                          for key, value in r.items()})
        return reply

    def op_evaluate(self, payload: Payload) -> Payload:
        """Accuracies on ``split`` for aligned, active-only and passive-only users, and each one's
        confusion matrix (``confusion_<name>``: counts, rows the true class, columns the predicted one); a
        population no predictor covers (class ``-1``: no local head nor prototype at me, no prototype at
        passive party k) has no key."""
        split = str(payload["split"])
        x = self._split_x(split)
        y = torch.from_numpy(np.asarray(self.data.val_y if split == "val" else self.data.test_y))
        passive = self._passive_features(payload, len(x)) if self.cfg.strategy.split_learning else None
        preds = {name: p for name, p in self.predict(x, passive).items() if not bool((p < 0).any())}
        for k, classes in enumerate(payload.get("passive_classes", []), start=1):
            guesses = torch.as_tensor(np.asarray(classes))
            if not bool((guesses < 0).any()):
                preds[f"passive_only_{k}"] = guesses
        out: Payload = {name: float((p == y).double().mean()) for name, p in preds.items()}
        n = self.data.n_classes
        for name, p in preds.items():
            pairs = y.long() * n + p.long()
            out[f"confusion_{name}"] = torch.bincount(pairs, minlength=n * n).reshape(n, n).numpy()
        return out

    def op_score(self, payload: Payload) -> Payload:
        """Accuracy of a passive party's label guesses for the aligned users and of its gradient attacks
        (scores the attack measurement; the gradient attacks at their best logged epoch).

        ``grad_norm``: AUC of the norm scores; ``grad_direction``: accuracy of the direction guesses on
        the users the attacker did not know, beside ``grad_direction_chance`` (the largest class share
        among them, the chance level of ``fwd_cluster`` too). The forward-embedding attack
        (:mod:`clients.vertical.embedding_attacks`): ``fwd_cluster`` (clusters labelled by the known
        users, scored on the others) and ``fwd_cluster_untrained`` (the same on the untrained encoder's
        embeddings), ``fwd_cluster_best`` (best one-to-one mapping on every user: an upper bound) beside
        ``fwd_cluster_best_chance`` (its value for randomly permuted labels).
        """
        assert self.aligned_rows is not None
        truth = self.y[self.aligned_rows].numpy()
        out: Payload = {}
        for name in ("exact", "nearest"):
            guesses = np.asarray(payload[name])
            if guesses.shape != truth.shape:
                raise ValueError(f"{name} guesses must have shape {truth.shape}, got {guesses.shape}")
            out[name] = float(np.mean(guesses == truth)) if len(truth) else float("nan")
        known = np.asarray(payload.get("grad_known", []), dtype=np.int64)
        unknown = np.setdiff1d(np.arange(len(truth)), known)
        norms, cosines = payload.get("grad_norm", []), payload.get("grad_cosine", [])
        if norms and len(unknown):
            n_classes = self.data.n_classes
            out["grad_norm"] = max(score_norm_attack(np.asarray(g), truth, n_classes) for g in norms)
            out["grad_direction"] = max(float(np.mean(direction_guesses(
                np.asarray(c)[unknown], truth[known], n_classes) == truth[unknown])) for c in cosines)
            out["grad_direction_chance"] = float(np.bincount(truth[unknown]).max() / len(unknown))
        if "fwd_clusters" in payload and len(unknown):
            out.update(self._score_clusters(payload, truth, known, unknown))
        return out

    def _score_clusters(self, payload: Payload, truth: np.ndarray, known: np.ndarray,
                        unknown: np.ndarray) -> dict[str, float]:
        """The forward-embedding attack's accuracies (see :meth:`op_score`)."""
        n_classes = self.data.n_classes
        out = {}
        for key in ("fwd_clusters", "fwd_clusters_untrained"):
            clusters = np.asarray(payload[key], dtype=np.int64)
            if clusters.shape != truth.shape:
                raise ValueError(f"{key} must have shape {truth.shape}, got {clusters.shape}")
            guesses = cluster_guesses(clusters, known, truth[known], n_classes)
            out[key.replace("clusters", "cluster")] = float(np.mean(guesses[unknown] == truth[unknown]))
        clusters = np.asarray(payload["fwd_clusters"], dtype=np.int64)
        out["fwd_cluster_best"] = best_mapping_accuracy(clusters, truth, n_classes)
        out["fwd_cluster_best_chance"] = permutation_chance(clusters, truth, n_classes, self.cfg.seed)
        return out
