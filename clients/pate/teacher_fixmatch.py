"""Semi-supervised PATE teachers by FixMatch on the student's unlabelled pool, batched.

The teachers of PATE-FM (Malek et al. 2021, "Antipodes of label differential privacy: PATE and ALIBI")
each run FixMatch (Sohn et al. 2020, "FixMatch: simplifying semi-supervised learning with consistency and
confidence") on their own labelled shard plus the shared unlabelled pool. Here, after the supervised
training of :func:`clients.pate.teacher_ensemble.train_ensemble`, every teacher trains on for
``pseudo_label_epochs`` passes over its shard; each step joins a minibatch of its shard (randomly shifted
as in the supervised training) with ``mu`` times as many samples of its own seeded pool subset
(:func:`clients.pate.teacher_ensemble.pool_subsets`). The loss is FixMatch's (Sohn et al. 2020,
Eq. 2-4): the shard's cross-entropy plus ``pseudo_label_weight`` times the cross-entropy of the strong
view's prediction with the weak view's predicted class, where the teacher's own weak-view confidence
reaches ``pseudo_label_threshold`` (averaged over the whole unlabelled batch). The weak and strong views
are :mod:`clients.pate.semi_supervised`'s (its :class:`FixMatchConfig` defaults, chosen for the student on
MNIST-1D). The pool carries no label: every target is the teacher's own prediction.

Teachers train ``chunk`` at a time as one stacked model (``torch.func.vmap``); every draw comes from the
teacher's own generator, so a teacher's result does not depend on its chunk-mates (up to float rounding).
The shared driver (:func:`clients.pate.teacher_ensemble.train_on_pool`) does the rest; this module holds
FixMatch's per-chunk step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, vmap

from clients.pate.augment import apply_shifts, draw_shifts
from clients.pate.semi_supervised import FixMatchConfig, strong_augment
from clients.pate.teacher_ensemble import (
    DEFAULT_CHUNK,
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

AUGMENT = FixMatchConfig()  # the weak and strong views' strengths


def _train_chunk(part: ChunkInputs, us: torch.Tensor, spec: ModelSpec,
                 settings: TeacherSettings) -> dict[str, torch.Tensor]:
    """FixMatch steps for one chunk: shards ``part.xs``, ``part.ys`` ``(K, n, ...)``, pool subsets ``us``
    ``(K, m, ...)``.
    """
    base, input_rank = part.base, part.input_rank
    params = {name: p.detach().clone().requires_grad_(True) for name, p in part.chunk.params.items()}

    def loss_one(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor, wb: torch.Tensor,
                 sb: torch.Tensor) -> torch.Tensor:
        labelled = F.cross_entropy(functional_call(base, p, (xb,)), yb)
        confidence, target = functional_call(base, p, (wb,)).detach().softmax(-1).max(-1)
        mask = (confidence >= settings.pseudo_label_threshold).to(xb.dtype)
        strong = F.cross_entropy(functional_call(base, p, (sb,)), target, reduction="none")
        unlabelled = (strong * mask).mean()  # over the whole unlabelled batch (Sohn et al. 2020, Eq. 4)
        return labelled + settings.pseudo_label_weight * unlabelled

    batched_loss = vmap(loss_one)
    generators = [torch.Generator().manual_seed(derived_seed(s, TRAIN_STREAM)) for s in part.seeds]
    optimiser = torch.optim.Adam(list(params.values()), lr=spec.lr, weight_decay=spec.weight_decay)
    xs, ys = part.xs, part.ys
    k, n = ys.shape
    m = us.shape[1]
    teacher_rows = torch.arange(k)[:, None]
    for epoch in range(settings.pseudo_label_epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators])
        for start in range(0, n, spec.batch_size):
            batch = orders[:, start:start + spec.batch_size]  # (K, b): row k indexes shard k only
            xb, yb = xs[teacher_rows, batch], ys[teacher_rows, batch]
            u = batch.shape[1] * settings.pseudo_label_mu
            picks = torch.stack([torch.randint(0, m, (u,), generator=g) for g in generators])
            ub = us[teacher_rows, picks]
            if spec.augment_shift:
                xb = apply_shifts(xb, torch.stack([
                    draw_shifts(batch.shape[1], spec.augment_shift, input_rank, g) for g in generators]))
            wb = apply_shifts(ub, torch.stack([draw_shifts(u, AUGMENT.weak_shift, input_rank, g)
                                               for g in generators]))
            sb = torch.stack([strong_augment(ub[i], AUGMENT, g) for i, g in enumerate(generators)])
            optimiser.zero_grad()
            batched_loss(params, xb, yb, wb, sb).sum().backward()
            optimiser.step()
        part.on_epoch(epoch + 1)
    return {name: p.detach() for name, p in params.items()}


def _setup(spec: ModelSpec, settings: TeacherSettings) -> PoolSetup[np.ndarray]:
    """The driver's set-up: FixMatch on each teacher's pool subset; the subsets are the report."""
    def setup(_: TeacherEnsemble, subsets: np.ndarray) -> tuple[ChunkStep, np.ndarray]:
        def step(part: ChunkInputs) -> dict[str, torch.Tensor]:
            return _train_chunk(part, part.pool[torch.from_numpy(subsets[part.rows])], spec, settings)
        return step, subsets
    return setup


def continue_with_fixmatch(
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
) -> tuple[TeacherEnsemble, np.ndarray]:
    """FixMatch (module docstring) for teachers ``supervised`` trained on ``shards`` of ``(x, y)``.

    ``pool_x`` holds unlabelled samples only. Returns the trained-on ensemble (same chunks) and each
    teacher's pool subset ``(K, m)`` (rows in ensemble order). ``progress(done)``, if given, counts the
    teacher-epochs done so far.

    Raises
    ------
    ValueError
        As :func:`clients.pate.teacher_ensemble.continue_on_pool` (an empty or misshapen pool).
    """
    return continue_on_pool(supervised, x, y, shards, teacher_ids, n_classes, spec, settings, pool_x,
                            _setup(spec, settings), data_seed=data_seed, progress=progress)


def train_fixmatch_ensemble(
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
) -> TeacherEnsemble:
    """Supervised training (:func:`~clients.pate.teacher_ensemble.train_ensemble`), then
    :func:`continue_with_fixmatch`; ``progress(done, total)`` counts the teacher-epochs of both.

    Raises
    ------
    ValueError
        As :func:`~clients.pate.teacher_ensemble.train_on_pool`.
    """
    return train_on_pool(x, y, shards, teacher_ids, n_classes, spec, settings, pool_x, _setup(spec, settings),
                         data_seed=data_seed, chunk=chunk, progress=progress)[0]
