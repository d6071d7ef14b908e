"""The active party's labels in training: ε-randomised response on its aligned users' labels, the loss
that corrects for it, and the labels its prototypes are computed from (a mixin of
:class:`clients.vertical.active_party.ActiveParty`; plain torch)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from clients.vertical.label_protection import forward_corrected_loss, randomized_response, transition_matrix
from clients.vertical.party_base import Party, Payload, seeded_generator


class ActiveLabels(Party):
    """Label protection of :class:`~clients.vertical.active_party.ActiveParty` (state set in its
    ``__init__``: ``y``, ``train_y``, ``noisy``, ``transition``, ``head``)."""

    y: torch.Tensor
    train_y: torch.Tensor
    noisy: torch.Tensor
    transition: torch.Tensor | None
    head: nn.Module

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

