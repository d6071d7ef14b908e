"""What each party of the vertical prototype exchange computes (plain torch; no Flower here).

:class:`ActiveParty` (label holder: encoder, top model, local head) and :class:`PassiveParty` (encoder)
expose the protocol as named operations, ``party.handle(op, payload) -> reply`` with payloads of numpy
arrays and scalars. The Flower ClientApp (:mod:`clients.vertical_party`) and the in-process link used by
the benchmark call exactly these operations, so both run the same method. A party's whole state
round-trips through :meth:`state_bytes` / :meth:`from_state` so a Flower node can keep it in
``context.state`` between messages.

One epoch (driven by :mod:`strategies.vertical_prototype`):

1. aligned minibatches (split learning, Vepakomma et al. 2018): passive ``step`` returns features of the
   batch (and applies the gradient of the previous batch); active ``step`` trains encoder + top model with
   cross-entropy and returns each passive party the gradient w.r.t. its features;
2. prototypes (patent method, DESIGN.md §4): passive ``snapshot`` sends the features of all aligned users;
   active ``prototypes`` computes its own class prototypes (EMA-smoothed) and, for each passive party,
   prototypes in that party's space (clipped / noised per :mod:`clients.prototype_privacy`); passive
   ``receive`` smooths them (EMA, post-processing);
3. ``local``: the active party trains its encoder + local head on all its labelled rows plus
   ``lam`` × first loss on its non-aligned rows. A passive party's third loss (``lam_passive`` × pull of
   non-aligned rows towards confident nearest-prototype pseudo-labels) rides along with each of its
   split-learning steps in (1), one random non-aligned minibatch per step.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from clients.encoders import build_encoder
from clients.gradient_attacks import (
    attack_epochs,
    direction_guesses,
    gradient_scores,
    known_users,
    score_norm_attack,
)
from clients.label_attacks import exact_label_attack, nearest_prototype_attack
from clients.label_protection import forward_corrected_loss, randomized_response, transition_matrix
from clients.prototype_privacy import release_prototypes
from clients.prototypes import (
    check_features,
    class_prototypes,
    nearest_prototype,
    prototype_classification_loss,
    prototype_pull_loss,
    prototype_temperature,
    pseudo_labels,
    smooth_prototypes,
)
from clients.training import check_inputs
from clients.vertical_data import PartyData
from clients.vertical_files import held_out_digest
from clients.vertical_fusion import choose_fusion, fuse, prototype_scores
from protocol.codec import from_flat, to_flat
from protocol.vertical import (
    ACTIVE,
    PASSIVE,
    Fusion,
    PrototypeNoise,
    VerticalConfig,
    configured_fusion,
    fusion_candidates,
    pack_replies,
    unpack_batch,
)

Payload = dict[str, Any]
SPLITS = ("val", "test")
RENAMED_KEYS: dict[str, str] = {
    "out_dir": "output_dir",
    "strategy.timeout": "strategy.timeout_s",
    "strategy.psi_timeout": "strategy.psi_timeout_s",
}
"""Config keys of model files saved by earlier releases → their current names."""


def build_top_model(n_parties: int, feature_dim: int, hidden: int, n_classes: int) -> nn.Module:
    """Active party's top model on the concatenated party features (``hidden = 0``: linear)."""
    width = n_parties * feature_dim
    if hidden == 0:
        return nn.Linear(width, n_classes)
    return nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, n_classes))


def _seeded(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence(list(parts)).generate_state(1)[0]))


class _Party:
    """State and operations common to both roles."""

    role = ""
    OPS: tuple[str, ...] = ()

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
                "n_classes": self.data.n_classes, "held_out_digest": held_out_digest(self.data)}

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
        torch.save(record, path)
        return {"path": str(path)}

    def saved_extras(self) -> dict[str, Any]:
        """Role-specific entries of the saved model file."""
        return {}

    def state_bytes(self) -> bytes:
        """The party's complete state (models, optimiser, alignment, prototypes, logs) as bytes."""
        buffer = io.BytesIO()
        torch.save(self.state(), buffer)
        return buffer.getvalue()

    @classmethod
    def from_state(cls, data: PartyData, cfg: VerticalConfig, blob: bytes | None) -> _Party:
        """A party rebuilt from :meth:`state_bytes` output (a fresh one if ``blob`` is None)."""
        party = cls(data, cfg)
        if blob is not None:
            party.load(torch.load(io.BytesIO(blob), weights_only=True))
        return party


class PassiveParty(_Party):
    """A party without labels: an encoder, the prototypes it receives, and (for measurement) its logs."""

    role = PASSIVE
    OPS = ("describe", "align", "step", "snapshot", "receive", "predict", "attack", "save", "batch")

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

    def op_step(self, payload: Payload) -> Payload:
        """Apply the gradients of the previous exchange (if any); return the features of the next one's
        minibatches (if any), concatenated in order.

        ``grad`` holds the gradients of the minibatches ``grad_positions`` (concatenated); each is one
        local update, in order, of the encoder *as it is now*: with several minibatches per exchange the
        later ones were computed on features that are stale by the earlier updates (FedBCD, Liu et al.
        2022, Algorithm 1). Each update also carries ``lam_passive`` × the third loss on one random
        minibatch of my non-aligned rows, so split learning and the prototype pull advance at one pace.
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
                loss = (self.encoder(self.x[rows]) * g).sum()
                loss = loss + self.third_loss(epoch, first + j)
                loss.backward()
                self.optimiser.step()
        if "positions" not in payload:
            return {}
        rows = np.concatenate(self._positions(payload, "positions"))
        return {"features": self.encode(self.x[rows]).numpy()}

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
        with τ tied to the prototypes' spread (:func:`clients.prototypes.prototype_temperature`).
        """
        s = self.cfg.strategy
        if (not s.prototypes or self.prototypes is None or self.valid is None or epoch < s.warmup_epochs
                or s.lam_passive == 0 or len(self.nonaligned_rows) == 0 or not bool(self.valid.any())):
            return torch.zeros(())
        pick = torch.randint(len(self.nonaligned_rows), (s.local_batch_size,),
                             generator=_seeded(self.cfg.seed, epoch, step, 2)).numpy()
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
        """Label guesses for the aligned users by both prototype attacks, and the gradient attacks'
        scores per logged epoch with the positions of the users whose labels the attacker knows (a
        measurement, never a protocol step)."""
        self._score_logged_gradients()
        n = 0 if self.aligned_rows is None else len(self.aligned_rows)
        out: Payload = {"grad_norm": [g.numpy() for g in self.grad_norm_log],
                        "grad_cosine": [c.numpy() for c in self.grad_cosine_log],
                        "grad_known": known_users(n, self.data.n_classes, self.cfg.seed)}
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
        return out

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.feature_log, self.prototype_log, self.valid_log = state["logs"]
        self.grad_epoch, self.grad_buffer, self.grad_norm_log, self.grad_cosine_log = state["grad_logs"]


class ActiveParty(_Party):
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
        response, drawn once per run from the run's seed (:mod:`clients.label_protection`)."""
        epsilon = self.cfg.strategy.label_rr_epsilon
        if epsilon == 0 or self.aligned_rows is None:
            return
        rows = torch.from_numpy(self.aligned_rows)
        self.train_y = self.y.clone()
        self.train_y[rows] = randomized_response(self.y[rows], self.data.n_classes, epsilon,
                                                 _seeded(self.cfg.seed, 4))
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
                                            _seeded(self.cfg.seed, self.releases, k, 3))
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
        """One pass: local head on all my labelled rows, plus ``lam`` × first loss on non-aligned rows."""
        s = self.cfg.strategy
        epoch = int(payload["epoch"])
        pull = (s.prototypes and self.prototypes is not None and self.valid is not None
                and epoch >= s.warmup_epochs and s.lam > 0)
        rows = np.arange(len(self.y)) if s.local_head else self.nonaligned_rows
        if not (s.local_head or pull) or len(rows) == 0:
            return {"loss": 0.0}
        nonaligned = torch.zeros(len(self.y), dtype=torch.bool)
        nonaligned[torch.from_numpy(self.nonaligned_rows)] = True
        order = rows[torch.randperm(len(rows), generator=_seeded(self.cfg.seed, epoch, 1)).numpy()]
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
        """Classes of aligned users (all parties, fused by ``self.fusion``) and of active-only users."""
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
        """Keep the candidate fusion (``vertical_fusion.fusion_candidates``) best on my validation users."""
        assert self.data.val_y is not None
        x = self._split_x("val")
        passive = self._passive_features(payload, len(x))
        labels = torch.from_numpy(np.asarray(self.data.val_y, dtype=np.int64))
        candidates = fusion_candidates(self.cfg.strategy)
        self.fusion, accuracies = choose_fusion(self.components(x, passive), labels, candidates)
        return {"fusion": np.array(self.fusion), "candidates": np.array(candidates),
                "val_accuracies": np.array(accuracies)}

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
        return {"passive_prototypes": [list(pair) for pair in self.private_passive_prototypes],
                "fusion": list(self.fusion)}

    def prototype_scores(self, passive_features: list[torch.Tensor]) -> torch.Tensor:
        """Sum over passive parties of nearest-prototype log-probabilities (:func:`prototype_scores`).

        Uses my exact class means of each party's aligned features: they stay at this party, so the
        fused prediction does not suffer from the noise added to the released prototypes.
        """
        return prototype_scores(passive_features, self.private_passive_prototypes, self.data.n_classes,
                                self.cfg.strategy.temperature_scale)

    def op_evaluate(self, payload: Payload) -> Payload:
        """Accuracies on ``split`` for aligned, active-only and passive-only users."""
        split = str(payload["split"])
        x = self._split_x(split)
        y = torch.from_numpy(np.asarray(self.data.val_y if split == "val" else self.data.test_y))
        passive = self._passive_features(payload, len(x)) if self.cfg.strategy.split_learning else None
        preds = self.predict(x, passive)
        out: Payload = {name: float((p == y).double().mean()) for name, p in preds.items()}
        for k, classes in enumerate(payload.get("passive_classes", []), start=1):
            out[f"passive_only_{k}"] = float((torch.as_tensor(np.asarray(classes)) == y).double().mean())
        return out

    def state(self) -> dict[str, Any]:
        out = super().state()
        out["releases"] = self.releases
        out["passive_prototypes"] = [list(pair) for pair in self.passive_prototypes]
        out["private_passive_prototypes"] = [list(pair) for pair in self.private_passive_prototypes]
        out["fusion"] = list(self.fusion)
        return out

    def load(self, state: dict[str, Any]) -> None:
        super().load(state)
        self.releases = int(state["releases"])
        self.passive_prototypes = [(p, v) for p, v in state["passive_prototypes"]]
        self.private_passive_prototypes = [(p, v) for p, v in state["private_passive_prototypes"]]
        self.fusion = (float(state["fusion"][0]), float(state["fusion"][1]), float(state["fusion"][2]))
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


def make_party(data: PartyData, cfg: VerticalConfig, blob: bytes | None = None) -> ActiveParty | PassiveParty:
    """The party object for ``data``'s role, restored from ``blob`` if given."""
    kind = ActiveParty if data.role == ACTIVE else PassiveParty
    return kind.from_state(data, cfg, blob)  # type: ignore[return-value]


def predict_saved(
    path: str | Path, x: np.ndarray, passive_features: list[np.ndarray] | None = None
) -> dict[str, np.ndarray]:
    """Predict with a model file written by the ``save`` operation (the per-role predict entry point).

    A passive model returns its ``features`` (to send to the active party) and ``classes`` by nearest
    prototype; an active model returns ``active_only`` classes and, given every passive party's features
    of the same users, ``aligned`` classes (top model, local head and prototype scores fused with the
    weights the run chose, :mod:`clients.vertical_fusion`). Model files of earlier releases, whose
config used the earlier key names (:data:`RENAMED_KEYS`), load too.

    Raises
    ------
    ValueError
        If ``x`` does not match the saved input shape or holds NaN/inf.
    """
    record = torch.load(Path(path), weights_only=True)
    saved = {RENAMED_KEYS.get(key, key): value for key, value in record["config"].items()}
    cfg = from_flat(VerticalConfig, saved, what="saved model config")
    shape, n_classes = tuple(record["input_shape"]), int(record["n_classes"])
    xt = torch.from_numpy(check_inputs(x, shape, "inputs"))
    m = cfg.model
    encoder = build_encoder(shape, kind=m.encoder, feature_dim=m.feature_dim, hidden=m.hidden)
    encoder.load_state_dict(record["modules"]["encoder"])
    encoder.eval()
    prototypes, valid = record["prototypes"], record["valid"]
    with torch.no_grad():
        features = encoder(xt)
        if record["role"] == PASSIVE:
            classes = (nearest_prototype(features, prototypes, valid) if prototypes is not None
                       else torch.full((len(xt),), -1, dtype=torch.long))
            return {"features": features.numpy(), "classes": classes.numpy()}
        head = nn.Linear(m.feature_dim, n_classes)
        head.load_state_dict(record["modules"]["head"])
        top = build_top_model(cfg.dataset.n_parties, m.feature_dim, m.top_hidden, n_classes)
        top.load_state_dict(record["modules"]["top"])
        head_logp = torch.log_softmax(head(features), dim=1)
        if cfg.strategy.local_head or prototypes is None:
            active_only = head_logp.argmax(dim=1)
        else:
            active_only = nearest_prototype(features, prototypes, valid)
        out = {"active_only": active_only.numpy()}
        if passive_features is not None:
            passive = [torch.as_tensor(np.asarray(f, dtype=np.float32)) for f in passive_features]
            for k, f in enumerate(passive, start=1):
                check_features(f, what=f"features of passive party {k}", dim=m.feature_dim)
            private = [(p, v) for p, v in record.get("passive_prototypes", [])]
            components = {
                "head": head_logp,
                "top": torch.log_softmax(top(torch.cat([features, *passive], dim=1)), dim=1),
                "proto": prototype_scores(passive, private, n_classes, cfg.strategy.temperature_scale),
            }
            fusion = record.get("fusion") or configured_fusion(cfg.strategy)
            out["aligned"] = fuse(components, (fusion[0], fusion[1], fusion[2])).argmax(dim=1).numpy()
    return out
