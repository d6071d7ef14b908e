"""The active party (label holder) of the vertical prototype exchange: encoder, top model over every
party's features, local head, prototypes, and the label protection of its aligned users (plain torch;
no Flower here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from clients.vertical.data import PartyData
from clients.vertical.fusion import choose_fusion, fuse, prototype_scores
from clients.vertical.gradient_attacks import (
    direction_guesses,
    score_norm_attack,
)
from clients.vertical.guard import apply_choice, baseline_config, choose_predictors, guarded
from clients.vertical.label_protection import forward_corrected_loss, randomized_response, transition_matrix
from clients.vertical.party_base import Party, Payload, build_top_model, seeded_generator
from clients.vertical.prototype_privacy import release_prototypes
from clients.vertical.prototypes import (
    check_features,
    class_prototypes,
    nearest_prototype,
    prototype_classification_loss,
    prototype_pull_loss,
    prototype_temperature,
    smooth_prototypes,
)
from protocol.vertical import (
    ACTIVE,
    Fusion,
    PrototypeNoise,
    VerticalConfig,
    configured_fusion,
    fusion_candidates,
)


class ActiveParty(Party):
    """The label holder: encoder, top model over all parties' features, local head, prototypes."""

    role = ACTIVE
    OPS = ("describe", "align", "step", "prototypes", "local", "select_fusion", "evaluate", "score", "save",
           "batch")

    def __init__(self, data: PartyData, cfg: VerticalConfig) -> None:
        if data.y is None or data.val_y is None or data.test_y is None:
            raise ValueError("the active party must hold labels for its rows and held-out users")
        super().__init__(data, cfg)
        self.y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
        # the labels training reads: the aligned users' ones through randomised response if configured
        self.train_y = self.y
        self.noisy = torch.zeros(len(self.y), dtype=torch.bool)
        self.transition: torch.Tensor | None = None
        self.releases = 0
        # what each passive party holds after smoothing the prototypes released to it (same EMA) ...
        self.passive_prototypes: list[tuple[torch.Tensor, torch.Tensor]] = []
        # ... and the exact class means of its aligned features, which never leave this party
        self.private_passive_prototypes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.fusion: Fusion = configured_fusion(cfg.strategy)  # until ``select_fusion`` picks one
        # the guard's local-only baseline (``clients.vertical.guard``) and, per population, the predictor
        # ``select_fusion`` chose for it (empty until then: the method's)
        self.baseline = ActiveParty(data, baseline_config(cfg)) if guarded(cfg) else None
        self.guard: dict[str, str] = {}

    def _build_extra(self) -> None:
        m, n_classes = self.cfg.model, self.data.n_classes
        self.top = build_top_model(self.cfg.dataset.n_parties, m.feature_dim, m.top_hidden, n_classes)
        self.head = nn.Linear(m.feature_dim, n_classes)

    def parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.top.parameters(), *self.head.parameters()]

    def modules(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder, "top": self.top, "head": self.head}

    def _passive_features(self, payload: Payload, n: int) -> list[torch.Tensor]:
        feats = [torch.as_tensor(np.asarray(f, dtype=np.float32)) for f in payload["passive_features"]]
        if len(feats) != self.cfg.dataset.n_parties - 1:
            raise ValueError(f"expected features from {self.cfg.dataset.n_parties - 1} passive parties, "
                             f"got {len(feats)}")
        for k, f in enumerate(feats, start=1):
            check_features(f, what=f"features of passive party {k}", dim=self.cfg.model.feature_dim)
            if len(f) != n:
                raise ValueError(f"passive party {k} sent {len(f)} feature rows, expected {n}")
        return feats

    def op_step(self, payload: Payload) -> Payload:
        """One split-learning step per aligned minibatch of ``positions``, in order; return the losses and,
        per passive party, the gradients w.r.t. its features (concatenated like the features).

        The passive features of one exchange were all computed before its first step (FedBCD, Liu et al.
        2022: the passive side is stale within an exchange; my own encoder and top model are not). With
        ``lam_aligned > 0`` (after warm-up) the loss also holds the nearest-prototype classification loss
        of the batch in every party's space, so the passive gradients carry it too.
        """
        batches = self._positions(payload, "positions")
        features = self._passive_features(payload, sum(len(rows) for rows in batches))
        targets = [self.prototype_labels(rows) for rows in batches]
        self.encoder.train()
        self.top.train()
        losses, grads, start = [], [[] for _ in features], 0
        for rows, labels in zip(batches, targets, strict=True):
            passive = [f[start:start + len(rows)].clone().requires_grad_(True) for f in features]
            start += len(rows)
            own = self.encoder(self.x[rows])
            loss = self.label_loss(self.top(torch.cat([own, *passive], dim=1)), rows)
            losses.append(float(loss.detach()))
            loss = loss + self.aligned_prototype_loss(own, passive, labels, int(payload.get("epoch", 0)))
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()
            for out, f in zip(grads, passive, strict=True):
                out.append(f.grad.numpy())  # type: ignore[union-attr]
        return {"losses": np.array(losses), "grads": [np.concatenate(g) for g in grads]}

    def aligned_prototype_loss(
        self, own: torch.Tensor, passive: list[torch.Tensor], labels: torch.Tensor, epoch: int
    ) -> torch.Tensor:
        """``lam_aligned`` × nearest-prototype cross-entropy of aligned features, in every party's space.

        Own features against my prototypes, passive party k's features against the prototypes it holds
        (the released ones, smoothed as it smooths them). It makes each space classifiable by nearest
        prototype, which is what the passive pseudo-labels (third loss) and the pulls rely on.
        """
        s = self.cfg.strategy
        if (not s.prototypes or s.lam_aligned == 0 or epoch < s.warmup_epochs or self.prototypes is None
                or self.valid is None):
            return own.sum() * 0.0
        spaces = [(own, self.prototypes, self.valid)]
        spaces += [(f, p, v) for f, (p, v) in zip(passive, self.passive_prototypes, strict=False)]
        loss = own.sum() * 0.0
        for features, protos, valid in spaces:
            temperature = prototype_temperature(protos, valid, s.temperature_scale)
            loss = loss + prototype_classification_loss(features, labels, protos, valid, temperature)
        return s.lam_aligned * loss

    def op_align(self, payload: Payload) -> Payload:
        reply = super().op_align(payload)
        self._protect_labels()
        return reply

    def _protect_labels(self) -> None:
        """With ``label_rr_epsilon > 0``: the aligned users' training labels through ε-randomised
        response, drawn once per run from the run's seed (:mod:`clients.vertical.label_protection`)."""
        epsilon = self.cfg.strategy.label_rr_epsilon
        if epsilon == 0 or self.aligned_rows is None:
            return
        rows = torch.from_numpy(self.aligned_rows)
        self.train_y = self.y.clone()
        self.train_y[rows] = randomized_response(self.y[rows], self.data.n_classes, epsilon,
                                                 seeded_generator(self.cfg.seed, 4))
        self.noisy = torch.zeros(len(self.y), dtype=torch.bool)
        self.noisy[rows] = True
        self.transition = transition_matrix(epsilon, self.data.n_classes)

    def prototype_labels(self, rows: np.ndarray) -> torch.Tensor:
        """Labels of my rows for the prototypes and prototype losses: the true ones, or with randomised
        response the most probable class given the response and my local head,
        ``argmax_c T[c, ỹ] · p_head(c | x)`` (post-processing: it keeps the ε-label-DP). Class means
        over the responses alone would sit near the overall mean for small ε."""
        if self.transition is None:
            return self.y[rows]
        self.head.eval()
        with torch.no_grad():
            log_p = torch.log_softmax(self.head(self.encode(self.x[rows])), dim=1)
        return (torch.log(self.transition[:, self.train_y[rows]].T) + log_p).argmax(dim=1)

    def label_loss(self, logits: torch.Tensor, rows: np.ndarray) -> torch.Tensor:
        """Mean cross-entropy of ``logits`` for my rows ``rows``: forward-corrected on randomised-response
        labels (Patrini et al. 2017), plain on the others."""
        if self.transition is None:
            return nn.functional.cross_entropy(logits, self.y[rows])
        index = torch.from_numpy(np.asarray(rows))
        noisy = self.noisy[index]
        per_row = nn.functional.cross_entropy(logits, self.y[index], reduction="none")
        corrected = forward_corrected_loss(logits, self.train_y[index], self.transition)
        return torch.where(noisy, corrected, per_row).mean()

    def op_prototypes(self, payload: Payload) -> Payload:
        """My first prototypes (kept) and each passive party's second prototypes (returned for release).

        With randomised-response labels my own prototypes come from my non-aligned rows and their true
        labels (none of them is an aligned user): class means over near-random labels would all sit at
        the overall mean, and the first loss would pull my features together into it.
        """
        assert self.aligned_rows is not None
        labels = self.prototype_labels(self.aligned_rows)
        passive = self._passive_features(payload, len(labels))
        own_rows = self.aligned_rows if self.transition is None else self.nonaligned_rows
        own, _, valid = class_prototypes(self.encode(self.x[own_rows]), self.train_y[own_rows],
                                         self.data.n_classes, min_count=self.cfg.strategy.min_count)
        self._smooth(own, valid)
        noise = self.cfg.strategy.noise()
        prototypes, valids = [], []
        mirrored, private = [], []
        ema = self.cfg.strategy.ema
        for k, feats in enumerate(passive, start=1):
            protos, ok = release_prototypes(feats, labels, self.data.n_classes, noise,
                                            seeded_generator(self.cfg.seed, self.releases, k, 3))
            prototypes.append(protos.numpy())
            valids.append(ok.numpy())
            before = self.passive_prototypes[k - 1] if len(self.passive_prototypes) >= k else (None, None)
            mirrored.append(smooth_prototypes(*before, protos, ok, ema))
            # same arithmetic as an unprotected release, so without protection both views are identical
            exact, exact_ok = release_prototypes(feats, labels, self.data.n_classes, PrototypeNoise(), None)
            before = (self.private_passive_prototypes[k - 1] if len(self.private_passive_prototypes) >= k
                      else (None, None))
            private.append(smooth_prototypes(*before, exact, exact_ok, ema))
        self.passive_prototypes, self.private_passive_prototypes = mirrored, private
        self.releases += 1
        return {"prototypes": prototypes, "valid": valids, "n_valid_own": int(valid.sum())}

    def op_local(self, payload: Payload) -> Payload:
        """One pass: local head on all my labelled rows, plus ``lam`` × first loss on non-aligned rows;
        with the guard, then one pass of the local-only baseline (its own models; the reply is mine)."""
        if self.baseline is not None:
            self.baseline.op_local(payload)
        s = self.cfg.strategy
        epoch = int(payload["epoch"])
        pull = (s.prototypes and self.prototypes is not None and self.valid is not None
                and epoch >= s.warmup_epochs and s.lam > 0)
        rows = np.arange(len(self.y)) if s.local_head else self.nonaligned_rows
        if not (s.local_head or pull) or len(rows) == 0:
            return {}  # nothing to train: no loss (``None`` in the history)
        nonaligned = torch.zeros(len(self.y), dtype=torch.bool)
        nonaligned[torch.from_numpy(self.nonaligned_rows)] = True
        order = rows[torch.randperm(len(rows), generator=seeded_generator(self.cfg.seed, epoch, 1)).numpy()]
        self.encoder.train()
        total = 0.0
        for start in range(0, len(order), s.local_batch_size):
            batch = torch.from_numpy(order[start:start + s.local_batch_size])
            features = self.encoder(self.x[batch])
            loss = features.sum() * 0.0
            if s.local_head:
                loss = loss + self.label_loss(self.head(features), batch.numpy())
            if pull:
                mask = nonaligned[batch]
                loss = loss + s.lam * self.first_loss(features[mask], self.y[batch][mask])
            impute = s.prototypes and s.lam_impute > 0 and epoch >= s.warmup_epochs
            if impute and self.private_passive_prototypes:
                mask = nonaligned[batch]
                if bool(mask.any()):
                    imputed = self.impute_passive(features[mask])
                    logits = self.top(torch.cat([features[mask], *imputed], dim=1))
                    loss = loss + s.lam_impute * nn.functional.cross_entropy(logits, self.y[batch][mask])
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()
            total += float(loss.detach()) * len(batch)
        return {"loss": total / len(order)}

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
        return self.baseline.components(x, None)["head"].argmax(dim=1)

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
                                       labels)
            self.guard = {population: str(r["chosen"]) for population, r in record.items()}
            reply.update({f"guard_{population}_{key}": value for population, r in record.items()
                          for key, value in r.items()})
        return reply

    def first_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Pull of my non-aligned features towards the prototypes of their labels (``pull_form``)."""
        assert self.prototypes is not None and self.valid is not None
        s = self.cfg.strategy
        if s.pull_form == "cross_entropy":
            temperature = prototype_temperature(self.prototypes, self.valid, s.temperature_scale)
            return prototype_classification_loss(features, labels, self.prototypes, self.valid, temperature)
        return prototype_pull_loss(features, labels, self.prototypes, self.valid)

    def impute_passive(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Stand-in passive features for users only I hold: ``sum_c q_c · p^k_c`` per passive party k.

        ``q`` is my local head's class distribution for the user (its label is *not* used, so the
        stand-in carries no more than my own features do) and ``p^k`` my exact, EMA-smoothed class
        means of party k's aligned features (never released, so no DP noise is needed on them).
        """
        with torch.no_grad():
            probs = torch.softmax(self.head(features), dim=1)
        out = []
        for protos, valid in self.private_passive_prototypes:
            weights = probs * valid[None, :].to(probs.dtype)
            weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1e-12)
            out.append(weights @ protos)
        return out

    def saved_extras(self) -> dict[str, Any]:
        """The exact passive prototypes, the fusion and, with the guard, its choice per population and the
        local-only baseline's encoder and head (``clients.vertical.predict`` applies them)."""
        extras: dict[str, Any] = {"fusion": list(self.fusion), "passive_prototypes": [
            list(pair) for pair in self.private_passive_prototypes]}
        if self.baseline is not None:
            extras["guard"] = dict(self.guard)
            extras["baseline"] = {"encoder": self.baseline.encoder.state_dict(),
                                  "head": self.baseline.head.state_dict()}
        return extras

    def prototype_scores(self, passive_features: list[torch.Tensor]) -> torch.Tensor:
        """Sum over passive parties of nearest-prototype log-probabilities (:func:`prototype_scores`).

        Uses my exact class means of each party's aligned features: they stay at this party, so the
        fused prediction does not suffer from the noise added to the released prototypes.
        """
        return prototype_scores(passive_features, self.private_passive_prototypes, self.data.n_classes,
                                self.cfg.strategy.temperature_scale)

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

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["releases"] = self.releases
        out["passive_prototypes"] = [list(pair) for pair in self.passive_prototypes]
        out["private_passive_prototypes"] = [list(pair) for pair in self.private_passive_prototypes]
        out["fusion"] = list(self.fusion)
        out["guard"] = dict(self.guard)
        out["baseline"] = None if self.baseline is None else self.baseline.state()
        return out

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.releases = int(state["releases"])
        self.passive_prototypes = [(p, v) for p, v in state["passive_prototypes"]]
        self.private_passive_prototypes = [(p, v) for p, v in state["private_passive_prototypes"]]
        self.fusion = (float(state["fusion"][0]), float(state["fusion"][1]), float(state["fusion"][2]))
        self.guard = {str(k): str(v) for k, v in state["guard"].items()}
        if self.baseline is not None:
            self.baseline.load(state["baseline"])
        self._protect_labels()

    def op_score(self, payload: Payload) -> Payload:
        """Accuracy of a passive party's label guesses for the aligned users and of its gradient attacks
        (scores the attack measurement; the gradient attacks at their best logged epoch).

        ``grad_norm``: AUC of the norm scores; ``grad_direction``: accuracy of the direction guesses on
        the users the attacker did not know, beside ``grad_direction_chance`` (the largest class share
        among them).
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
        return out
