"""Semi-supervised PATE teachers by pseudo-labelling the student's unlabelled pool, batched.

PATE-FM (Malek et al. 2021, "Antipodes of label differential privacy: PATE and ALIBI") makes every
teacher semi-supervised: each trains on its own labelled shard plus the shared unlabelled pool, so the
teachers agree more often and the noisy aggregation answers more queries, more correctly, for the same
privacy cost. This module implements the cheapest such teacher, pseudo-labelling (Lee 2013,
"Pseudo-label: the simple and efficient semi-supervised learning method for deep neural networks"):

1. every teacher trains supervised on its own shard (:func:`clients.pate.teacher_ensemble.train_ensemble`,
   unchanged);
2. every teacher draws its own seeded subset of the pool (:func:`clients.pate.teacher_ensemble.pool_subsets`)
   and labels it with its OWN predictions, keeping those at least ``pseudo_label_threshold`` confident
   (:func:`pseudo_label`) — the pool carries no label, and no teacher sees another's predictions;
3. every teacher trains on (fresh Adam, same learning rate and weight decay) for ``pseudo_label_epochs``
   passes over its shard: each step joins a minibatch of its shard (as in step 1) with ``mu`` times as
   many of its own confident pseudo-labelled samples drawn uniformly with replacement; the loss is the
   shard's cross-entropy plus ``pseudo_label_weight`` times the pseudo-labels' (zero for a teacher with
   no confident pseudo-label). Both parts are randomly shifted as in step 1.

Teachers are trained ``chunk`` at a time as one stacked model (``torch.func.vmap``), exactly as in step
1; teachers keep different numbers of confident pseudo-labels, which the per-teacher sampling absorbs
(no padding enters a loss). Minibatch order, pseudo-label draws and shifts come from each teacher's own
generator, so a teacher's result does not depend on which other teachers share its chunk (up to float
rounding). The shared driver (:func:`clients.pate.teacher_ensemble.train_on_pool`) does the rest; this
module holds steps 2 and 3 for one chunk.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from clients.pate.augment import apply_shifts, draw_shifts
from clients.pate.teacher_ensemble import (
    DEFAULT_CHUNK,
    QUERY_BLOCK,
    TRAIN_STREAM,
    ChunkInputs,
    ChunkStep,
    PoolSetup,
    TeacherEnsemble,
    continue_on_pool,
    derived_seed,
    train_on_pool,
)
from protocol.pate import ModelSpec, TeacherSettings


@dataclass(frozen=True)
class PseudoLabels:
    """Each teacher's pool subset and its own labels of it; rows in ``teacher_ids`` order.

    ``pool_index`` ``(K, m)``: indices into the pool; ``labels`` ``(K, m)``: the teacher's predicted
    class; ``confident`` ``(K, m)``: whether its softmax confidence reached the threshold (only those
    train it).
    """

    teacher_ids: list[int]
    pool_index: np.ndarray
    labels: np.ndarray
    confident: np.ndarray

    def counts(self) -> list[int]:
        """Confident pseudo-labels per teacher, in ``teacher_ids`` order."""
        return [int(c) for c in self.confident.sum(axis=1)]


@torch.no_grad()
def pseudo_label(
    ensemble: TeacherEnsemble, pool_x: np.ndarray, pool_index: np.ndarray, threshold: float,
) -> PseudoLabels:
    """Every teacher of ``ensemble`` labels its own pool rows ``pool_index`` (rows in ensemble order).

    Teacher ``k`` predicts ``pool_x[pool_index[k]]`` with its own weights only; a label is confident if
    its softmax probability is ``>= threshold``.
    """
    pool = torch.from_numpy(np.asarray(pool_x, dtype=np.float32))
    index = torch.from_numpy(pool_index)
    base = copy.deepcopy(ensemble.teacher(ensemble.teacher_ids[0])).to("meta").eval()

    def one(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        return functional_call(base, p, (xb,))

    labels, confident, row = [], [], 0
    for c in ensemble.chunks:
        rows = index[row:row + len(c.teacher_ids)]
        row += len(c.teacher_ids)
        probs = torch.cat([vmap(one)(c.params, pool[rows[:, i:i + QUERY_BLOCK]]).softmax(-1)
                           for i in range(0, rows.shape[1], QUERY_BLOCK)], 1)
        top, label = probs.max(-1)
        labels.append(label)
        confident.append(top >= threshold)
    return PseudoLabels(ensemble.teacher_ids, pool_index, torch.cat(labels).numpy(),
                        torch.cat(confident).numpy())


def _train_on(part: ChunkInputs, labels: PseudoLabels, spec: ModelSpec,
              settings: TeacherSettings) -> dict[str, torch.Tensor]:
    """Step 3 for one chunk: shard minibatches ``(part.xs, part.ys)`` joined by confident pseudo-labelled
    ones of the chunk's rows of ``labels``."""
    confident = torch.from_numpy(labels.confident[part.rows])
    first_confident = torch.argsort((~confident).to(torch.int8), dim=1, stable=True)
    pool_rows = torch.from_numpy(labels.pool_index[part.rows]).gather(1, first_confident)  # confident first
    pool_labels = torch.from_numpy(labels.labels[part.rows]).gather(1, first_confident)
    counts = confident.sum(1)
    base, pool, input_rank = part.base, part.pool, part.input_rank
    params = {name: p.detach().clone().requires_grad_(True) for name, p in part.chunk.params.items()}

    def loss_one(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor, ub: torch.Tensor,
                 vb: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        labelled = F.cross_entropy(functional_call(base, p, (xb,)), yb)
        pseudo = F.cross_entropy(functional_call(base, p, (ub,)), vb)
        return labelled + settings.pseudo_label_weight * has * pseudo

    batched_loss = vmap(loss_one)
    generators = [torch.Generator().manual_seed(derived_seed(s, TRAIN_STREAM)) for s in part.seeds]
    optimiser = torch.optim.Adam(list(params.values()), lr=spec.lr, weight_decay=spec.weight_decay)
    xs, ys = part.xs, part.ys
    k, n = ys.shape
    teacher_rows = torch.arange(k)[:, None]
    has = (counts > 0).float()
    for epoch in range(settings.pseudo_label_epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators])
        for start in range(0, n, spec.batch_size):
            batch = orders[:, start:start + spec.batch_size]  # (K, b): row k indexes shard k only
            xb, yb = xs[teacher_rows, batch], ys[teacher_rows, batch]
            u = batch.shape[1] * settings.pseudo_label_mu
            draws = torch.stack([torch.rand(u, generator=g) for g in generators])
            picks = (draws * counts.clamp(min=1)[:, None]).long()  # (K, u): among teacher k's confident ones
            ub, vb = pool[pool_rows[teacher_rows, picks]], pool_labels[teacher_rows, picks]
            if spec.augment_shift:
                shifts = torch.stack([draw_shifts(batch.shape[1] + u, spec.augment_shift, input_rank, g)
                                      for g in generators])
                xb = apply_shifts(xb, shifts[:, :batch.shape[1]])
                ub = apply_shifts(ub, shifts[:, batch.shape[1]:])
            optimiser.zero_grad()
            batched_loss(params, xb, yb, ub, vb, has).sum().backward()
            optimiser.step()
        part.on_epoch(epoch + 1)
    return {name: p.detach() for name, p in params.items()}


def _setup(pool_x: np.ndarray, spec: ModelSpec, settings: TeacherSettings) -> PoolSetup[PseudoLabels]:
    """The driver's set-up: step 2 over the whole ensemble, then step 3 per chunk; the labels are the report.
    """
    def setup(supervised: TeacherEnsemble, subsets: np.ndarray) -> tuple[ChunkStep, PseudoLabels]:
        labels = pseudo_label(supervised, pool_x, subsets, settings.pseudo_label_threshold)

        def step(part: ChunkInputs) -> dict[str, torch.Tensor]:
            return _train_on(part, labels, spec, settings)
        return step, labels
    return setup


def continue_with_pseudo_labels(
    supervised: TeacherEnsemble,
    x: np.ndarray,
    y: np.ndarray,
    shards: Sequence[np.ndarray],
    teacher_ids: Sequence[int],
    n_classes: int,
    spec: ModelSpec,
    settings: TeacherSettings,
    pool_x: np.ndarray,
    *,
    data_seed: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[TeacherEnsemble, PseudoLabels]:
    """Steps 2-3 of the module docstring for teachers ``supervised`` trained on ``shards`` of ``(x, y)``.

    ``pool_x`` holds unlabelled samples only. Returns the trained-on ensemble (same chunks) and the
    pseudo-labels each teacher gave itself. ``progress(done)``, if given, counts the teacher-epochs of
    step 3 done so far.

    Raises
    ------
    ValueError
        As :func:`clients.pate.teacher_ensemble.continue_on_pool` (an empty or misshapen pool).
    """
    return continue_on_pool(supervised, x, y, shards, teacher_ids, n_classes, spec, settings, pool_x,
                            _setup(pool_x, spec, settings), data_seed=data_seed, progress=progress)


def train_pseudo_label_ensemble(
    x: np.ndarray,
    y: np.ndarray,
    shards: Sequence[np.ndarray],
    teacher_ids: Sequence[int],
    n_classes: int,
    spec: ModelSpec,
    settings: TeacherSettings,
    pool_x: np.ndarray,
    *,
    data_seed: int,
    chunk: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[TeacherEnsemble, PseudoLabels]:
    """Train teacher ``teacher_ids[i]`` on shard ``shards[i]`` of ``(x, y)`` plus pseudo-labels of ``pool_x``.

    Step 1 (:func:`~clients.pate.teacher_ensemble.train_ensemble`), then
    :func:`continue_with_pseudo_labels`. ``progress(done, total)``, if given, counts teacher-epochs of
    both (``len(teacher_ids) * (spec.epochs + settings.pseudo_label_epochs)``).

    Raises
    ------
    ValueError
        As :func:`~clients.pate.teacher_ensemble.train_on_pool`.
    """
    return train_on_pool(x, y, shards, teacher_ids, n_classes, spec, settings, pool_x,
                         _setup(pool_x, spec, settings), data_seed=data_seed, chunk=chunk, progress=progress)
