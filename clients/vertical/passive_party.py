"""The passive party of the vertical prototype exchange: an encoder, the prototypes it receives, and (for
the attack measurement) what it logs of what it received (plain torch; no Flower here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from clients.vertical.data import PartyData
from clients.vertical.embedding_attacks import kmeans
from clients.vertical.gradient_attacks import (
    attack_epochs,
    gradient_scores,
    known_users,
)
from clients.vertical.label_attacks import exact_label_attack, nearest_prototype_attack
from clients.vertical.party_base import Party, Payload, seeded_generator
from clients.vertical.prototypes import (
    check_features,
    nearest_prototype,
    prototype_classification_loss,
    prototype_logits,
    prototype_pull_loss,
    prototype_temperature,
    pseudo_labels,
)
from protocol.vertical import (
    PASSIVE,
    VerticalConfig,
)


class PassiveParty(Party):
    """A party without labels: an encoder, the prototypes it receives, and (for measurement) its logs."""

    role = PASSIVE
    OPS = ("describe", "align", "step", "snapshot", "receive", "predict", "attack", "save", "batch", "reset")

    def __init__(self, data: PartyData, cfg: VerticalConfig) -> None:
        if data.y is not None or data.val_y is not None or data.test_y is not None:
            raise ValueError(f"passive party {data.name} must not hold labels")
        super().__init__(data, cfg)
        self.feature_log: list[torch.Tensor] = []
        self.prototype_log: list[torch.Tensor] = []
        self.valid_log: list[torch.Tensor] = []
        # gradients received in the epoch being logged, and the gradient attacks' scores per logged epoch
        self.grad_epoch = -1
        self.grad_buffer: torch.Tensor | None = None
        self.grad_norm_log: list[torch.Tensor] = []
        self.grad_cosine_log: list[torch.Tensor] = []
        # the aligned users' embeddings by the encoder before any update: the forward-embedding attack's
        # baseline (what my own features give away without the protocol)
        self.untrained_embeddings: torch.Tensor | None = None
        # the features I sent in the last exchange (concatenated like its positions), kept for
        # ``stale_refresh = prototypes``
        self.sent_features: torch.Tensor | None = None

    def op_align(self, payload: Payload) -> Payload:
        """Adopt the aligned IDs; with the attack measurement on, keep the untrained encoder's embeddings
        of them."""
        reply = super().op_align(payload)
        if self.cfg.strategy.attack:
            assert self.aligned_rows is not None
            self.untrained_embeddings = self.encode(self.x[self.aligned_rows])
        return reply

    def op_step(self, payload: Payload) -> Payload:
        """Apply the gradients of the previous exchange (if any); return the features of the next one's
        minibatches (if any), concatenated in order.

        ``grad`` holds the gradients of the minibatches ``grad_positions`` (concatenated); each is one
        local update, in order, of the encoder *as it is now*: with several minibatches per exchange the
        later ones were computed on features that are stale by the earlier updates (FedBCD, Liu et al.
        2022, Algorithm 1). Each update also carries ``lam_passive`` × the third loss on one random
        minibatch of my non-aligned rows, so split learning and the prototype pull advance at one pace.
        With ``stale_refresh = prototypes`` every update after the first also carries the change of the
        gradient's prototype part since the features were sent (:meth:`prototype_gradient_refresh`).
        """
        if "grad" in payload:
            batches = self._positions(payload, "grad_positions")
            grad = torch.as_tensor(np.asarray(payload["grad"], dtype=np.float32))
            n = sum(len(rows) for rows in batches)
            if grad.shape != (n, self.cfg.model.feature_dim):
                raise ValueError(f"gradient must have shape ({n}, {self.cfg.model.feature_dim}), "
                                 f"got {tuple(grad.shape)}")
            self.encoder.train()
            start, epoch, first = 0, int(payload["epoch"]), int(payload["step"])
            if self.cfg.strategy.attack and epoch in attack_epochs(self.cfg.strategy.epochs):
                self._log_gradients(epoch, np.concatenate(payload["grad_positions"]), grad)
            for j, rows in enumerate(batches):
                g = grad[start:start + len(rows)]
                start += len(rows)
                self.optimiser.zero_grad()
                # d/dθ of <f_θ(x), g> is the chain rule through the features: the split-learning update
                features = self.encoder(self.x[rows])
                if j > 0:  # the encoder moved since the features were sent (never before the first)
                    g = g + self.prototype_gradient_refresh(features.detach(), start - len(rows), epoch)
                loss = (features * g).sum()
                loss = loss + self.third_loss(epoch, first + j)
                loss.backward()
                self.optimiser.step()
        if "positions" not in payload:
            return {}
        rows = np.concatenate(self._positions(payload, "positions"))
        features = self.encode(self.x[rows])
        if self.cfg.strategy.stale_refresh == "prototypes":
            self.sent_features = features
        return {"features": features.numpy()}

    def _log_gradients(self, epoch: int, positions: np.ndarray, grad: torch.Tensor) -> None:
        """Keep the gradients of aligned users received in ``epoch`` (scored when the epoch is over)."""
        assert self.aligned_rows is not None
        if epoch != self.grad_epoch:
            self._score_logged_gradients()
            self.grad_epoch = epoch
            self.grad_buffer = torch.zeros(len(self.aligned_rows), self.cfg.model.feature_dim)
        assert self.grad_buffer is not None
        self.grad_buffer[torch.from_numpy(positions.astype(np.int64))] = grad

    def _score_logged_gradients(self) -> None:
        """Norm and direction scores of the logged epoch's gradients (Li et al. 2022), then drop them."""
        if self.grad_buffer is None:
            return
        known = known_users(len(self.grad_buffer), self.data.n_classes, self.cfg.seed)
        norms, cosines = gradient_scores(self.grad_buffer.numpy(), known)
        self.grad_norm_log.append(torch.from_numpy(norms))
        self.grad_cosine_log.append(torch.from_numpy(cosines))
        self.grad_buffer = None

    def op_snapshot(self, payload: Payload) -> Payload:
        """Features of every aligned user, for this round's prototypes (logged for the attack measurement)."""
        assert self.aligned_rows is not None
        features = self.encode(self.x[self.aligned_rows])
        if self.cfg.strategy.attack:
            self.feature_log.append(features)
        return {"features": features.numpy()}

    def op_receive(self, payload: Payload) -> Payload:
        """Take this round's prototypes in my feature space and smooth them into mine (EMA)."""
        prototypes = torch.as_tensor(np.asarray(payload["prototypes"], dtype=np.float32))
        valid = torch.as_tensor(np.asarray(payload["valid"], dtype=bool))
        check_features(prototypes, what="received prototypes", dim=self.cfg.model.feature_dim)
        if prototypes.shape[0] != self.data.n_classes or valid.shape != (self.data.n_classes,):
            raise ValueError(f"expected {self.data.n_classes} prototypes and valid flags")
        if self.cfg.strategy.attack:
            self.prototype_log.append(prototypes)
            self.valid_log.append(valid)
        self._smooth(prototypes, valid)
        return {"n_valid": int(valid.sum())}

    def third_loss(self, epoch: int, step: int) -> torch.Tensor:
        """``lam_passive`` × mean squared distance of confident non-aligned features to the nearest prototype.

        Pseudo-labels: the nearest prototype, kept when ``softmax(-d²/τ)`` exceeds ``pseudo_threshold``
        with τ tied to the prototypes' spread (:func:`clients.vertical.prototypes.prototype_temperature`).
        """
        s = self.cfg.strategy
        if (not s.prototypes or self.prototypes is None or self.valid is None or epoch < s.warmup_epochs
                or s.lam_passive == 0 or len(self.nonaligned_rows) == 0 or not bool(self.valid.any())):
            return torch.zeros(())
        pick = torch.randint(len(self.nonaligned_rows), (s.local_batch_size,),
                             generator=seeded_generator(self.cfg.seed, epoch, step, 2)).numpy()
        features = self.encoder(self.x[self.nonaligned_rows[pick]])
        temperature = prototype_temperature(self.prototypes, self.valid, s.temperature_scale)
        labels, _, keep = pseudo_labels(features.detach(), self.prototypes, self.valid,
                                        threshold=s.pseudo_threshold, temperature=temperature)
        if not bool(keep.any()):
            return torch.zeros(())
        if s.pull_form == "cross_entropy":
            return s.lam_passive * prototype_classification_loss(
                features[keep], labels[keep], self.prototypes, self.valid, temperature)
        return s.lam_passive * prototype_pull_loss(features[keep], labels[keep], self.prototypes, self.valid)

    def prototype_gradient_refresh(self, features: torch.Tensor, offset: int, epoch: int) -> torch.Tensor:
        """What the received gradient of a stale minibatch lacks in its prototype part (``stale_refresh``).

        The label holder's ``lam_aligned`` term in my space is the nearest-prototype cross-entropy of the
        batch's features against the prototypes I hold (Snell et al. 2017, eq. 2, mean over the B rows).
        Its gradient w.r.t. a row's features is ``(2/τ)(Σ_c q_c(f) p_c - p_y)``: the label enters only
        through the constant ``p_y``, the features only through the softmax ``q(f)`` over my prototypes.
        So I refresh it exactly, without the label, from the features ``s`` I sent (rows ``offset …`` of
        the exchange) to my current ones ``f``: ``lam_aligned · (2/(τB)) (Σ_c q_c(f) p_c - Σ_c q_c(s) p_c)``
        per row. It assumes every row's class has a prototype (else the label holder skipped that row's
        term). Zero when the label holder adds no such term (off, warm-up, fewer than two prototypes).
        """
        s, sent = self.cfg.strategy, self.sent_features
        if (s.stale_refresh == "off" or sent is None or not s.prototypes or s.lam_aligned == 0
                or epoch < s.warmup_epochs or self.prototypes is None or self.valid is None
                or int(self.valid.sum()) < 2):
            return torch.zeros_like(features)
        temperature = prototype_temperature(self.prototypes, self.valid, s.temperature_scale)
        then = sent[offset:offset + len(features)]
        now = torch.softmax(prototype_logits(features, self.prototypes, self.valid, temperature), dim=1)
        before = torch.softmax(prototype_logits(then, self.prototypes, self.valid, temperature), dim=1)
        change = (now - before) @ self.prototypes
        return s.lam_aligned * 2.0 / (temperature * len(features)) * change

    def op_predict(self, payload: Payload) -> Payload:
        """Features and nearest-prototype classes of the held-out users of ``split`` (sorted IDs)."""
        features = self.encode(self._split_x(str(payload["split"])))
        return {"features": features.numpy(), "classes": self.classify(features).numpy()}

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Passive-only prediction: class of the nearest prototype (``-1`` without prototypes)."""
        if self.prototypes is None or self.valid is None:
            return torch.full((len(features),), -1, dtype=torch.long)
        return nearest_prototype(features, self.prototypes, self.valid)

    def op_attack(self, payload: Payload) -> Payload:
        """Label guesses for the aligned users by both prototype attacks, the gradient attacks' scores
        per logged epoch with the positions of the users whose labels the attacker knows, and the
        forward-embedding attack's k-means clusters of the aligned users' embeddings by my final and my
        untrained encoder (``fwd_clusters``, ``fwd_clusters_untrained``; with fewer aligned users than
        classes, none) — a measurement, never a protocol step."""
        self._score_logged_gradients()
        assert self.aligned_rows is not None
        n, n_classes = len(self.aligned_rows), self.data.n_classes
        out: Payload = {"grad_norm": [g.numpy() for g in self.grad_norm_log],
                        "grad_cosine": [c.numpy() for c in self.grad_cosine_log],
                        "grad_known": known_users(n, n_classes, self.cfg.seed)}
        if n >= n_classes and self.untrained_embeddings is not None:
            out["fwd_clusters"] = kmeans(self.encode(self.x[self.aligned_rows]).numpy(), n_classes,
                                         self.cfg.seed)
            out["fwd_clusters_untrained"] = kmeans(self.untrained_embeddings.numpy(), n_classes,
                                                   self.cfg.seed)
        if not self.feature_log:
            return {**out, "exact": np.full(n, -1), "nearest": np.full(n, -1)}
        feats = [f.numpy() for f in self.feature_log]
        exact = exact_label_attack(feats, [p.numpy() for p in self.prototype_log],
                                   [v.numpy() for v in self.valid_log])
        nearest = nearest_prototype_attack(self.feature_log[-1].numpy(), self.prototype_log[-1].numpy(),
                                           self.valid_log[-1].numpy())
        return {**out, "exact": exact, "nearest": nearest}

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["logs"] = [self.feature_log, self.prototype_log, self.valid_log]
        out["grad_logs"] = [self.grad_epoch, self.grad_buffer, self.grad_norm_log, self.grad_cosine_log]
        out["untrained_embeddings"] = self.untrained_embeddings
        out["sent_features"] = self.sent_features
        return out

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.feature_log, self.prototype_log, self.valid_log = state["logs"]
        self.grad_epoch, self.grad_buffer, self.grad_norm_log, self.grad_cosine_log = state["grad_logs"]
        self.untrained_embeddings = state["untrained_embeddings"]
        self.sent_features = state["sent_features"]
