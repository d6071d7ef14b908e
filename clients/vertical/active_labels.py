"""The active party's labels in training: ε-randomised response on its aligned users' labels, the loss
that corrects for it, the labels its prototypes are computed from, and the secret seed of its privacy
noise (a mixin of :class:`clients.vertical.active_party.ActiveParty`; plain torch).

The privacy noise (the randomised response here, the prototype noise of
:mod:`clients.vertical.active_prototypes`) is drawn from a per-run secret: 128 bits of OS entropy the
label holder takes when it first aligns (:func:`protocol.privacy_noise.privacy_noise_seed`) and keeps in
its node state, never in a message. A public seed would let anyone replay the draws and strip the noise
(the DP guarantee assumes the noise unknown, Dwork & Roth 2014, §3); redrawing in every message (a
Flower node rebuilds its party per message) would re-randomise the labels and leak them by averaging,
so the same draw is reused from the state for the whole run.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clients.vertical.label_protection import forward_corrected_loss, randomized_response, transition_matrix
from clients.vertical.party_base import Party, Payload, seeded_generator
from protocol.privacy_noise import privacy_noise_seed
from protocol.vertical import PRIVACY_NOISE_KEYS


class ActiveLabels(Party):
    """Label protection of :class:`~clients.vertical.active_party.ActiveParty` (state set in its
    ``__init__``: ``y``, ``train_y``, ``noisy``, ``transition``, ``head``)."""

    y: torch.Tensor
    train_y: torch.Tensor
    noisy: torch.Tensor
    transition: torch.Tensor | None
    head: nn.Module
    noise_seed: int | None

    def op_align(self, payload: Payload) -> Payload:
        reply = super().op_align(payload)
        s = self.cfg.strategy
        if self.noise_seed is None and any(getattr(s, key) > 0 for key in PRIVACY_NOISE_KEYS):
            # once per run (a new run starts from a fresh state): never redrawn, so nothing averages out
            self.noise_seed = privacy_noise_seed(s.noise_seed, stacklevel=3)
        self._protect_labels()
        return reply

    def privacy_generator(self, *purpose: int) -> torch.Generator:
        """The generator of one privacy-noise draw (``purpose``: what it is for), seeded by the run's secret.

        Raises
        ------
        RuntimeError
            If no noise seed was drawn (no privacy noise configured, or before ``align``).
        """
        if self.noise_seed is None:
            raise RuntimeError("no privacy noise seed: none is configured, or the party is not aligned yet")
        return seeded_generator(self.noise_seed, *purpose)

    def _protect_labels(self) -> None:
        """With ``label_rr_epsilon > 0``: the aligned users' training labels through ε-randomised
        response, drawn once per run from the secret noise seed (:mod:`clients.vertical.label_protection`)."""
        epsilon = self.cfg.strategy.label_rr_epsilon
        if epsilon == 0 or self.aligned_rows is None:
            return
        rows = torch.from_numpy(self.aligned_rows)
        self.train_y = self.y.clone()
        self.train_y[rows] = randomized_response(self.y[rows], self.data.n_classes, epsilon,
                                                 self.privacy_generator(4))
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

