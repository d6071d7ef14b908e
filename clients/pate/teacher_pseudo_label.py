"""Semi-supervised PATE teachers by pseudo-labelling the student's unlabelled pool, batched.

PATE-FM (Malek et al. 2021, "Antipodes of label differential privacy: PATE and ALIBI") makes every
teacher semi-supervised: each trains on its own labelled shard plus the shared unlabelled pool, so the
teachers agree more often and the noisy aggregation answers more queries, more correctly, for the same
privacy cost. This module implements the cheapest such teacher, pseudo-labelling (Lee 2013,
"Pseudo-label: the simple and efficient semi-supervised learning method for deep neural networks"):

1. every teacher trains supervised on its own shard (:func:`clients.pate.teacher_ensemble.train_ensemble`,
   unchanged);
2. every teacher draws its own seeded subset of the pool (:func:`pool_subsets`) and labels it with its
   OWN predictions, keeping those at least ``pseudo_label_threshold`` confident (:func:`pseudo_label`) —
   the pool carries no label, and no teacher sees another's predictions;
3. every teacher trains on (fresh Adam, same learning rate and weight decay) for ``pseudo_label_epochs``
   passes over its shard: each step joins a minibatch of its shard (as in step 1) with ``mu`` times as
   many of its own confident pseudo-labelled samples drawn uniformly with replacement; the loss is the
   shard's cross-entropy plus ``pseudo_label_weight`` times the pseudo-labels' (zero for a teacher with
   no confident pseudo-label). Both parts are randomly shifted as in step 1.

Teachers are trained ``chunk`` at a time as one stacked model (``torch.func.vmap``), exactly as in step
1; teachers keep different numbers of confident pseudo-labels, which the per-teacher sampling absorbs
(no padding enters a loss). Minibatch order, pseudo-label draws and shifts come from each teacher's own
generator, so a teacher's result does not depend on which other teachers share its chunk (up to float
rounding).
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
    TeacherChunk,
    TeacherEnsemble,
    new_teacher_model,
    teacher_seed,
    train_ensemble,
)
from protocol.pate import ModelSpec, TeacherSettings

POOL_STREAM = 1  # SeedSequence key of a teacher's pool subset, beside its seed
TRAIN_STREAM = 2  # SeedSequence key of a teacher's pseudo-label training generator


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


def derived_seed(seed: int, stream: int) -> int:
    """A 63-bit seed for stream ``stream`` of the teacher whose seed is ``seed`` (independent streams)."""
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def pool_subsets(pool_size: int, per_teacher: int, seeds: Sequence[int]) -> np.ndarray:
    """Each teacher's sorted subset of ``min(per_teacher, pool_size)`` pool indices (0: the whole pool).

    Drawn without replacement from the teacher's own seed; ``(K, m)`` int64.
    """
    m = pool_size if per_teacher == 0 else min(per_teacher, pool_size)
    return np.stack([np.sort(np.random.default_rng(derived_seed(s, POOL_STREAM)).choice(
        pool_size, size=m, replace=False)) for s in seeds]).astype(np.int64)


def check_pool(x: np.ndarray, pool_x: np.ndarray) -> None:
    """Refuse an empty pool or one whose samples are not shaped like the shards' ``x`` (ValueError)."""
    if len(pool_x) == 0 or tuple(pool_x.shape[1:]) != tuple(x.shape[1:]):
        raise ValueError(f"the unlabelled pool must be non-empty samples shaped like the shards' "
                         f"{tuple(x.shape[1:])}, got {tuple(pool_x.shape)}")


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


def _train_on(
    chunk: TeacherChunk, base: torch.nn.Module, xs: torch.Tensor, ys: torch.Tensor, pool: torch.Tensor,
    pool_rows: torch.Tensor, pool_labels: torch.Tensor, counts: torch.Tensor, seeds: Sequence[int],
    spec: ModelSpec, settings: TeacherSettings, input_rank: int, on_epoch: Callable[[int], None],
) -> dict[str, torch.Tensor]:
    """Step 3 for one chunk: shard minibatches ``(xs, ys)`` joined by confident pseudo-labelled ones.

    ``pool_rows`` ``(K, m)`` pool indices with each teacher's ``counts[k]`` confident ones first,
    ``pool_labels`` their labels.
    """
    params = {name: p.detach().clone().requires_grad_(True) for name, p in chunk.params.items()}

    def loss_one(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor, ub: torch.Tensor,
                 vb: torch.Tensor, has: torch.Tensor) -> torch.Tensor:
        labelled = F.cross_entropy(functional_call(base, p, (xb,)), yb)
        pseudo = F.cross_entropy(functional_call(base, p, (ub,)), vb)
        return labelled + settings.pseudo_label_weight * has * pseudo

    batched_loss = vmap(loss_one)
    generators = [torch.Generator().manual_seed(derived_seed(s, TRAIN_STREAM)) for s in seeds]
    optimiser = torch.optim.Adam(list(params.values()), lr=spec.lr, weight_decay=spec.weight_decay)
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
        on_epoch(epoch + 1)
    return {name: p.detach() for name, p in params.items()}


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
        If the pool is empty or its samples' shape differs from ``x``'s.
    """
    check_pool(x, pool_x)
    seeds = [teacher_seed(data_seed, t) for t in supervised.teacher_ids]
    labels = pseudo_label(supervised, pool_x, pool_subsets(len(pool_x), settings.pool_per_teacher, seeds),
                          settings.pseudo_label_threshold)
    input_shape = tuple(x.shape[1:])
    base = new_teacher_model(input_shape, n_classes, spec, seed=0).to("meta").train()
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    pool = torch.from_numpy(np.asarray(pool_x, dtype=np.float32))
    shard_of = {int(t): np.asarray(s, dtype=np.int64) for t, s in zip(teacher_ids, shards, strict=True)}
    chunks, row, done = [], 0, 0
    for c in supervised.chunks:
        rows = slice(row, row + len(c.teacher_ids))
        row += len(c.teacher_ids)
        confident = torch.from_numpy(labels.confident[rows])
        first_confident = torch.argsort((~confident).to(torch.int8), dim=1, stable=True)
        pool_rows = torch.from_numpy(labels.pool_index[rows]).gather(1, first_confident)
        pool_labels = torch.from_numpy(labels.labels[rows]).gather(1, first_confident)
        index = torch.stack([torch.from_numpy(shard_of[t]) for t in c.teacher_ids])

        def tick(epoch: int, before: int = done, width: int = len(c.teacher_ids)) -> None:
            if progress is not None:
                progress(before + epoch * width)

        params = _train_on(c, base, xt[index], yt[index], pool, pool_rows, pool_labels, confident.sum(1),
                           seeds[rows], spec, settings, len(input_shape), tick)
        chunks.append(TeacherChunk(list(c.teacher_ids), params))
        done += len(c.teacher_ids) * settings.pseudo_label_epochs
    return TeacherEnsemble(supervised.teacher(supervised.teacher_ids[0]), chunks), labels


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
        As :func:`~clients.pate.teacher_ensemble.train_ensemble` and :func:`continue_with_pseudo_labels`.
    """
    check_pool(x, pool_x)  # before the costly step 1
    total = len(teacher_ids) * (spec.epochs + settings.pseudo_label_epochs)
    first = len(teacher_ids) * spec.epochs

    def step1(done: int, _: int) -> None:
        if progress is not None:
            progress(done, total)

    def step3(done: int) -> None:
        if progress is not None:
            progress(first + done, total)

    supervised = train_ensemble(x, y, shards, teacher_ids, n_classes, spec, data_seed=data_seed, chunk=chunk,
                                progress=step1)
    return continue_with_pseudo_labels(supervised, x, y, shards, teacher_ids, n_classes, spec, settings,
                                       pool_x, data_seed=data_seed, progress=step3)
