"""The active party (label holder) of the vertical prototype exchange: encoder, top model over every
party's features, local head, prototypes, and the label protection of its aligned users (plain torch;
no Flower here)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from clients.vertical.active_labels import ActiveLabels
from clients.vertical.active_prototypes import ActivePrototypes
from clients.vertical.active_serving import ActiveServing
from clients.vertical.data import PartyData
from clients.vertical.embedding_protection import label_decorrelation_loss
from clients.vertical.gradient_protection import perturb_gradients
from clients.vertical.guard import LocalBaseline, guarded
from clients.vertical.party_base import Payload, build_top_model, seeded_generator
from clients.vertical.prototypes import check_features
from protocol.vertical import ACTIVE, Fusion, VerticalConfig, configured_fusion


class ActiveParty(ActiveLabels, ActivePrototypes, ActiveServing):
    """The label holder: encoder, top model over all parties' features, local head, prototypes.

    Its concerns live in three mixins: label protection (:mod:`clients.vertical.active_labels`),
    prototypes (:mod:`clients.vertical.active_prototypes`), serving and measuring
    (:mod:`clients.vertical.active_serving`); here are its state, its split-learning step, its local pass
    and what it saves."""

    role = ACTIVE
    OPS = ("describe", "align", "step", "prototypes", "local", "select_fusion", "evaluate", "score", "save",
           "batch", "reset")
    KEPT_ON_RESET = ("noise_seed",)  # one secret draw per run, never redrawn (``active_labels``)

    def __init__(self, data: PartyData, cfg: VerticalConfig) -> None:
        if data.y is None or data.val_y is None or data.test_y is None:
            raise ValueError("the active party must hold labels for its rows and held-out users")
        super().__init__(data, cfg)
        self.y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
        # the labels training reads: the aligned users' ones through randomised response if configured
        self.train_y = self.y
        self.noisy = torch.zeros(len(self.y), dtype=torch.bool)
        self.transition: torch.Tensor | None = None
        # the run's secret seed of the privacy noise, drawn at ``align`` (``active_labels``): state only
        self.noise_seed: int | None = None
        self.releases = 0
        # what each passive party holds after smoothing the prototypes released to it (same EMA) ...
        self.passive_prototypes: list[tuple[torch.Tensor, torch.Tensor]] = []
        # ... and the exact class means of its aligned features, which never leave this party
        self.private_passive_prototypes: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.fusion: Fusion = configured_fusion(cfg.strategy)  # until ``select_fusion`` picks one
        # the guard's local-only baseline (``clients.vertical.guard``) and, per population, the predictor
        # ``select_fusion`` chose for it (empty until then: the method's)
        self.baseline = LocalBaseline(self.encoder, self.head, cfg) if guarded(cfg) else None
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
        of the batch in every party's space, so the passive gradients carry it too; with ``dcor_weight``
        > 0 it also holds that weight × the distance correlation of each passive party's features of the
        batch with the batch's (prototype) labels (:mod:`clients.vertical.embedding_protection`), which
        reaches the passive gradients only.
        """
        batches = self._positions(payload, "positions")
        features = self._passive_features(payload, sum(len(rows) for rows in batches))
        targets = [self.prototype_labels(rows) for rows in batches]
        epoch = int(payload.get("epoch", 0))
        self.encoder.train()
        self.top.train()
        losses, grads, start = [], [[] for _ in features], 0
        for rows, labels in zip(batches, targets, strict=True):
            passive = [f[start:start + len(rows)].clone().requires_grad_(True) for f in features]
            start += len(rows)
            own = self.encoder(self.x[rows])
            loss = self.label_loss(self.top(torch.cat([own, *passive], dim=1)), rows)
            losses.append(float(loss.detach()))
            loss = loss + self.aligned_prototype_loss(own, passive, labels, epoch)
            if self.cfg.strategy.dcor_weight > 0:
                loss = loss + self.cfg.strategy.dcor_weight * label_decorrelation_loss(
                    passive, labels, self.data.n_classes)
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()
            for k, (out, f) in enumerate(zip(grads, passive, strict=True)):
                assert f.grad is not None
                out.append(self.released_gradients(f.grad, epoch, int(rows[0]), k).numpy())
        return {"losses": np.array(losses), "grads": [np.concatenate(g) for g in grads]}

    def released_gradients(
        self, grad: torch.Tensor, epoch: int, first_row: int, party: int
    ) -> torch.Tensor:
        """What passive party ``party`` receives of a batch's gradients: clipped and noised as
        ``grad_clip`` and ``grad_noise`` say (:mod:`clients.vertical.gradient_protection`), the noise
        drawn from the run's secret seed (batch named by its epoch and first row), else exact."""
        s = self.cfg.strategy
        if s.grad_clip == 0:
            return grad
        generator = self.privacy_generator(5, epoch, first_row, party) if s.grad_noise > 0 else None
        return perturb_gradients(grad, s.grad_clip, s.grad_noise, generator)

    def op_local(self, payload: Payload) -> Payload:
        """One pass: local head on all my labelled rows, plus ``lam`` × first loss on non-aligned rows;
        with the guard, also one pass of the local-only baseline (its own models; the reply is mine)."""
        s = self.cfg.strategy
        epoch = int(payload["epoch"])
        if self.baseline is not None:
            self.baseline.train_pass(self.x, self.y, epoch)
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

    def saved_extras(self) -> dict[str, Any]:
        """The exact passive prototypes, the fusion and, with the guard, its choice per population and the
        local-only baseline's encoder and head (``clients.vertical.predict`` applies them)."""
        extras: dict[str, Any] = {"fusion": list(self.fusion), "passive_prototypes": [
            list(pair) for pair in self.private_passive_prototypes]}
        if self.baseline is not None:
            extras["guard"] = dict(self.guard)
            extras["baseline"] = {name: m.state_dict() for name, m in self.baseline.modules().items()}
        return extras

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["noise_seed"] = self.noise_seed
        out["releases"] = self.releases
        out["passive_prototypes"] = [list(pair) for pair in self.passive_prototypes]
        out["private_passive_prototypes"] = [list(pair) for pair in self.private_passive_prototypes]
        out["fusion"] = list(self.fusion)
        out["guard"] = dict(self.guard)
        out["baseline"] = None if self.baseline is None else self.baseline.state()
        return out

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.noise_seed = None if state["noise_seed"] is None else int(state["noise_seed"])
        self.releases = int(state["releases"])
        self.passive_prototypes = [(p, v) for p, v in state["passive_prototypes"]]
        self.private_passive_prototypes = [(p, v) for p, v in state["private_passive_prototypes"]]
        self.fusion = (float(state["fusion"][0]), float(state["fusion"][1]), float(state["fusion"][2]))
        self.guard = {str(k): str(v) for k, v in state["guard"].items()}
        if self.baseline is not None:
            self.baseline.load(state["baseline"])
        self._protect_labels()

