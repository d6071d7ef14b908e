"""The active party's prototypes: its own, the ones it releases to each passive party (noised), the
exact ones it keeps, and the losses and stand-ins built on them (a mixin of
:class:`clients.vertical.active_party.ActiveParty`; plain torch)."""

from __future__ import annotations

import torch

from clients.vertical.fusion import prototype_scores
from clients.vertical.party_base import Party, Payload
from clients.vertical.prototype_privacy import release_prototypes
from clients.vertical.prototypes import (
    class_prototypes,
    prototype_classification_loss,
    prototype_pull_loss,
    prototype_temperature,
    smooth_prototypes,
)
from protocol.vertical import PrototypeNoise


class ActivePrototypes(Party):
    """Prototype release and use of :class:`~clients.vertical.active_party.ActiveParty` (state set in its
    ``__init__``: ``releases``, ``passive_prototypes``, ``private_passive_prototypes``, ``head``)."""

    releases: int
    passive_prototypes: list[tuple[torch.Tensor, torch.Tensor]]
    private_passive_prototypes: list[tuple[torch.Tensor, torch.Tensor]]
    head: torch.nn.Module
    train_y: torch.Tensor

    def privacy_generator(self, *purpose: int) -> torch.Generator:
        raise NotImplementedError  # :class:`clients.vertical.active_labels.ActiveLabels` seeds it

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
        noised = noise.noise_multiplier > 0 or noise.count_noise > 0
        for k, feats in enumerate(passive, start=1):
            generator = self.privacy_generator(self.releases, k, 3) if noised else None
            protos, ok = release_prototypes(feats, labels, self.data.n_classes, noise, generator)
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

    def prototype_scores(self, passive_features: list[torch.Tensor]) -> torch.Tensor:
        """Sum over passive parties of nearest-prototype log-probabilities (:func:`prototype_scores`).

        Uses my exact class means of each party's aligned features: they stay at this party, so the
        fused prediction does not suffer from the noise added to the released prototypes.
        """
        return prototype_scores(passive_features, self.private_passive_prototypes, self.data.n_classes,
                                self.cfg.strategy.temperature_scale)

