"""A node's PATE teachers trained and queried as one batched ensemble (``torch.func``).

PATE (Papernot et al. 2017, "Semi-supervised knowledge transfer for deep learning from private
training data"; Papernot et al. 2018, "Scalable private learning with PATE") trains many teachers,
each on its own disjoint shard. Teachers of one architecture differ only in their weights, so a node
stacks the weights of up to ``chunk`` teachers (``torch.func.stack_module_state``) and runs them as one
vectorised model (``torch.func.vmap`` over ``torch.func.functional_call``): one forward/backward
computes every teacher's step, and one Adam step on the stacked tensors updates them all.

Each teacher's training equals training it alone (:func:`train_teacher_alone`):

- initialisation: the model is built right after ``torch.manual_seed(seed)`` (under
  ``torch.random.fork_rng``, so the caller's global RNG is untouched), ``seed`` the teacher's own
  (:func:`teacher_seed`);
- data: a teacher sees its own shard only: its minibatches index its shard's stacked copy;
- minibatch order and augmentation: drawn from the teacher's own ``torch.Generator(seed)``, in the same
  order as alone (per epoch one permutation, per minibatch the shifts of ``clients.pate.augment``);
- loss: the SUM over teachers of each teacher's mean cross-entropy, so teacher ``k``'s gradient is the
  gradient of its own loss; Adam (Kingma & Ba 2015) with L2 weight decay (``torch.optim.Adam``'s
  ``weight_decay``) is elementwise, so on stacked tensors it is per-teacher Adam;
- shard sizes: teachers are grouped by shard size (iid shards differ by at most one sample), so all
  teachers of a chunk take the same number of steps with the same minibatch sizes.

2-D CNNs train faster as one grouped convolutional network (``clients.pate.grouped_cnn``: the teachers'
images side by side on the channel axis, ``conv2d(groups=K)``) than under ``vmap``; the loss, and so every
teacher's gradient, is the same up to float rounding. That path is chosen for the networks
``grouped_cnn.supports`` (2-D inputs, the ``cnn`` encoder); every other network trains under ``vmap``.

Teachers must not hold buffers that training updates (batch-norm statistics); the encoders of
``clients.encoders`` hold none.

The semi-supervised teachers of PATE-FM (Malek et al. 2021, "Antipodes of label differential privacy:
PATE and ALIBI") train on after this supervised training, each on its shard plus its own seeded subset
of the student's unlabelled pool (:func:`pool_subsets`). :func:`train_on_pool` and
:func:`continue_on_pool` drive that for any such method: they check the pool, draw the subsets, stack
each chunk's shards, count the progress and assemble the ensemble; the method supplies only its
per-chunk training step (pseudo-labelling, Lee 2013: ``clients.pate.teacher_pseudo_label``; FixMatch,
Sohn et al. 2020: ``clients.pate.teacher_fixmatch``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from clients.encoders import Classifier, build_classifier
from clients.pate import grouped_cnn
from clients.pate.augment import apply_shifts, draw_shifts, random_shift
from protocol.pate import ModelSpec, TeacherSettings

TEACHER_SEED_STRIDE = 100_003
DEFAULT_CHUNK = 250  # teachers trained as one batch: bounds memory (stacked weights, Adam state, batches)
QUERY_BLOCK = 2048  # queries per vectorised forward when voting
POOL_STREAM = 1  # SeedSequence key of a teacher's pool subset, beside its seed
TRAIN_STREAM = 2  # SeedSequence key of a teacher's generator when it trains on with the pool


def teacher_seed(data_seed: int, teacher: int) -> int:
    """Seed of teacher ``teacher`` of a run whose data seed is ``data_seed``."""
    return data_seed * TEACHER_SEED_STRIDE + teacher


def new_teacher_model(
    input_shape: tuple[int, ...], n_classes: int, spec: ModelSpec, *, seed: int
) -> Classifier:
    """A freshly initialised teacher, its weights drawn after ``torch.manual_seed(seed)``.

    The caller's global torch RNG state is restored afterwards.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_classifier(input_shape, n_classes, kind=spec.encoder, feature_dim=spec.feature_dim,
                                hidden=spec.hidden)


def _check_training(spec: ModelSpec, n: int) -> None:
    if (spec.epochs < 0 or spec.batch_size < 1 or spec.lr <= 0 or spec.weight_decay < 0
            or spec.augment_shift < 0):
        raise ValueError(f"invalid teacher training settings {spec}: need epochs >= 0, batch_size >= 1, "
                         "lr > 0, weight_decay >= 0, augment_shift >= 0")
    if n == 0:
        raise ValueError("cannot train a teacher on an empty shard")


def train_teacher_alone(
    x: np.ndarray, y: np.ndarray, n_classes: int, spec: ModelSpec, *, seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> Classifier:
    """Train one teacher on its shard ``(x, y)``: the reference loop of :func:`train_ensemble`.

    Adam with cross-entropy for ``spec.epochs`` epochs of minibatches of ``spec.batch_size`` (the last
    one of an epoch smaller), in an order drawn per epoch from ``torch.Generator(seed)``, each minibatch
    randomly shifted by up to ``spec.augment_shift`` positions/pixels (``clients.pate.augment``) with draws
    from the same generator. ``progress(epoch, spec.epochs)``, if given, is called after every epoch.

    Raises
    ------
    ValueError
        If ``x`` and ``y`` differ in length, are empty, or ``spec`` has invalid training settings.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    _check_training(spec, len(y))
    input_shape = tuple(x.shape[1:])
    model = new_teacher_model(input_shape, n_classes, spec, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    optimiser = torch.optim.Adam(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    model.train()
    for epoch in range(spec.epochs):
        order = torch.randperm(len(yt), generator=generator)
        for start in range(0, len(yt), spec.batch_size):
            batch = order[start:start + spec.batch_size]
            xb = random_shift(xt[batch], spec.augment_shift, generator, input_rank=len(input_shape))
            optimiser.zero_grad()
            F.cross_entropy(model(xb), yt[batch]).backward()
            optimiser.step()
        if progress is not None:
            progress(epoch + 1, spec.epochs)
    model.eval()
    return model


@dataclass
class TeacherChunk:
    """Up to ``chunk`` teachers' weights stacked along a leading axis of size ``len(teacher_ids)``."""

    teacher_ids: list[int]
    params: dict[str, torch.Tensor]


class TeacherEnsemble:
    """Trained teachers of one architecture, held as stacked chunks; votes and predicts vectorised.

    Parameters
    ----------
    template
        A model of the teachers' architecture (its weights are ignored).
    chunks
        The stacked weights; every teacher id occurs once.
    """

    def __init__(self, template: nn.Module, chunks: Sequence[TeacherChunk]) -> None:
        ids = [t for c in chunks for t in c.teacher_ids]
        if len(set(ids)) != len(ids):
            raise ValueError(f"teacher ids occur in more than one chunk: {sorted(ids)}")
        self.chunks = list(chunks)
        self._base = copy.deepcopy(template).to("meta").eval()
        names = {name for name, _ in self._base.named_parameters()}
        for c in self.chunks:
            if set(c.params) != names:
                raise ValueError(f"chunk of teachers {c.teacher_ids} has parameters {sorted(c.params)}, "
                                 f"the architecture needs {sorted(names)}")
            if any(p.shape[0] != len(c.teacher_ids) for p in c.params.values()):
                raise ValueError(f"chunk of teachers {c.teacher_ids}: stacked weights do not have "
                                 f"{len(c.teacher_ids)} rows")

    @property
    def teacher_ids(self) -> list[int]:
        """Every teacher's id, in chunk order."""
        return [t for c in self.chunks for t in c.teacher_ids]

    def _logits(self, params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        def one(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
            return functional_call(self._base, p, (xb,))

        return vmap(one, in_dims=(0, None))(params, x)

    @torch.no_grad()
    def predictions(self, x: np.ndarray) -> np.ndarray:
        """Every teacher's predicted class on ``x``: ``(K, N)`` int64, rows in :attr:`teacher_ids` order."""
        xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
        rows = []
        for c in self.chunks:
            blocks = [self._logits(c.params, xt[i:i + QUERY_BLOCK]).argmax(-1)
                      for i in range(0, len(xt), QUERY_BLOCK)]
            empty = torch.zeros((len(c.teacher_ids), 0), dtype=torch.long)
            rows.append(torch.cat(blocks, 1) if blocks else empty)
        return torch.cat(rows).numpy()

    @torch.no_grad()
    def vote_histogram(self, x: np.ndarray, n_classes: int) -> np.ndarray:
        """Per-query vote counts ``(Q, C)`` of all teachers on ``x`` (each teacher casts one vote).

        Per-teacher predictions exist only inside this call, one query block at a time.
        """
        xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
        votes = torch.zeros((len(xt), n_classes), dtype=torch.int64)
        for c in self.chunks:
            for i in range(0, len(xt), QUERY_BLOCK):
                pred = self._logits(c.params, xt[i:i + QUERY_BLOCK]).argmax(-1)  # (K, q)
                block = votes[i:i + QUERY_BLOCK]
                block.scatter_add_(1, pred.T, torch.ones_like(pred.T))
        return votes.numpy()

    def accuracies(self, x: np.ndarray, y: np.ndarray) -> list[float]:
        """Every teacher's top-1 accuracy on ``(x, y)``, in :attr:`teacher_ids` order (NaN if empty)."""
        if len(y) == 0:
            return [float("nan")] * len(self.teacher_ids)
        return [float(v) for v in (self.predictions(x) == np.asarray(y)[None, :]).mean(axis=1)]

    def teacher(self, teacher_id: int) -> nn.Module:
        """Teacher ``teacher_id`` as a stand-alone module (a copy of its weights)."""
        for c in self.chunks:
            if teacher_id in c.teacher_ids:
                row = c.teacher_ids.index(teacher_id)
                model = copy.deepcopy(self._base).to_empty(device="cpu")
                model.load_state_dict({name: p[row].detach().clone() for name, p in c.params.items()})
                return model.eval()
        raise KeyError(f"teacher {teacher_id} is not in this ensemble (has {self.teacher_ids})")


def _train_chunk(
    xs: torch.Tensor, ys: torch.Tensor, models: list[nn.Module], seeds: Sequence[int], spec: ModelSpec,
    input_rank: int, on_epoch: Callable[[int, dict[str, torch.Tensor]], None] | None = None,
) -> dict[str, torch.Tensor]:
    """Train stacked teachers on their stacked shards ``xs`` ``(K, n, *S)``, ``ys`` ``(K, n)``."""
    params, _ = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta").train()

    def loss_one(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(base, p, (xb,)), yb)

    grouped = grouped_cnn.supports(base, input_rank)  # 2-D CNNs: one grouped network, faster than vmap

    def summed_loss(p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        if grouped:
            return grouped_cnn.grouped_loss(base, p, xb, yb)
        return vmap(loss_one)(p, xb, yb).sum()

    generators = [torch.Generator().manual_seed(s) for s in seeds]
    optimiser = torch.optim.Adam(list(params.values()), lr=spec.lr, weight_decay=spec.weight_decay)
    k, n = ys.shape
    teacher_rows = torch.arange(k)[:, None]
    for epoch in range(spec.epochs):
        orders = torch.stack([torch.randperm(n, generator=g) for g in generators])
        for start in range(0, n, spec.batch_size):
            batch = orders[:, start:start + spec.batch_size]  # (K, b): row k indexes shard k only
            xb, yb = xs[teacher_rows, batch], ys[teacher_rows, batch]
            if spec.augment_shift:
                shifts = torch.stack([draw_shifts(batch.shape[1], spec.augment_shift, input_rank, g)
                                      for g in generators])
                xb = apply_shifts(xb, shifts)
            optimiser.zero_grad()
            summed_loss(params, xb, yb).backward()
            optimiser.step()
        if on_epoch is not None:
            on_epoch(epoch + 1, {name: p.detach() for name, p in params.items()})
    return {name: p.detach() for name, p in params.items()}


def train_ensemble(
    x: np.ndarray,
    y: np.ndarray,
    shards: Sequence[np.ndarray],
    teacher_ids: Sequence[int],
    n_classes: int,
    spec: ModelSpec,
    *,
    data_seed: int,
    chunk: int = DEFAULT_CHUNK,
    on_epoch: Callable[[int, TeacherEnsemble], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TeacherEnsemble:
    """Train teacher ``teacher_ids[i]`` on ``(x[shards[i]], y[shards[i]])``, batched in chunks.

    Teachers are grouped by shard size, then trained ``chunk`` at a time; each equals
    :func:`train_teacher_alone` with ``seed = teacher_seed(data_seed, teacher_id)`` up to float rounding.
    ``on_epoch(epoch, chunk_ensemble)``, if given, is called after every epoch of every chunk with that
    chunk's teachers as they are (the learning rate is constant, so the teachers after epoch ``e`` are
    the teachers a run of ``e`` epochs returns: one run evaluates several epoch counts).
    ``progress(done, total)``, if given, is called after every epoch of every chunk with the teacher-epochs
    done so far and in all (``len(teacher_ids) * spec.epochs``); it does not change the training.

    Raises
    ------
    ValueError
        If ``shards`` and ``teacher_ids`` differ in length, ids repeat, a shard is empty, ``chunk`` < 1
        or ``spec`` has invalid training settings.
    """
    if len(shards) != len(teacher_ids):
        raise ValueError(f"shards and teacher_ids differ in length: {len(shards)} vs {len(teacher_ids)}")
    if len(set(teacher_ids)) != len(teacher_ids):
        raise ValueError(f"teacher_ids repeat: {list(teacher_ids)}")
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    if not teacher_ids:
        raise ValueError("teacher_ids is empty: no teacher to train")
    for shard in shards:
        _check_training(spec, len(shard))
    input_shape = tuple(x.shape[1:])
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    by_size: dict[int, list[int]] = {}
    for i, shard in enumerate(shards):
        by_size.setdefault(len(shard), []).append(i)
    template = None
    chunks = []
    total, finished = len(teacher_ids) * spec.epochs, 0
    for size in sorted(by_size):
        members = by_size[size]
        for start in range(0, len(members), chunk):
            part = members[start:start + chunk]
            seeds = [teacher_seed(data_seed, teacher_ids[i]) for i in part]
            models = [new_teacher_model(input_shape, n_classes, spec, seed=s) for s in seeds]
            template = models[0] if template is None else template
            index = torch.stack([torch.as_tensor(np.asarray(shards[i], dtype=np.int64)) for i in part])
            ids = [int(teacher_ids[i]) for i in part]
            hook = None
            if on_epoch is not None or progress is not None:
                def hook(epoch: int, p: dict[str, torch.Tensor], ids: list[int] = ids,
                         model: nn.Module = models[0], before: int = finished) -> None:
                    if on_epoch is not None:
                        on_epoch(epoch, TeacherEnsemble(model, [TeacherChunk(ids, p)]))
                    if progress is not None:
                        progress(before + epoch * len(ids), total)
            params = _train_chunk(xt[index], yt[index], models, seeds, spec, len(input_shape), hook)
            chunks.append(TeacherChunk(ids, params))
            finished += len(ids) * spec.epochs
    assert template is not None
    return TeacherEnsemble(template, chunks)


# -- training on with the unlabelled pool (semi-supervised teachers) -------------------------------------


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


@dataclass(frozen=True)
class ChunkInputs:
    """What a per-chunk training step gets from :func:`continue_on_pool`: one chunk of the supervised
    ensemble with its teachers' stacked shards.

    ``rows`` are the chunk's rows in ensemble order (of the pool subsets and of what the method's set-up
    computed); ``xs`` ``(K, n, *S)``, ``ys`` ``(K, n)`` the shards; ``pool`` the whole unlabelled pool;
    ``seeds`` each teacher's seed (:func:`teacher_seed`); ``base`` the architecture on the meta device, in
    training mode; ``on_epoch(epoch)`` is to be called after each of the chunk's epochs.
    """

    chunk: TeacherChunk
    rows: slice
    xs: torch.Tensor
    ys: torch.Tensor
    pool: torch.Tensor
    seeds: list[int]
    base: nn.Module
    input_rank: int
    on_epoch: Callable[[int], None]


ChunkStep = Callable[[ChunkInputs], dict[str, torch.Tensor]]
"""A method's training on of one chunk: its teachers' trained-on weights, stacked as the chunk's."""
Extra = TypeVar("Extra")
PoolSetup = Callable[[TeacherEnsemble, np.ndarray], tuple[ChunkStep, Extra]]
"""``setup(supervised, subsets)``: a method's per-chunk step, and what it reports besides the ensemble,
given the supervised ensemble and each teacher's pool subset ``(K, m)`` (rows in ensemble order)."""


def continue_on_pool(
    supervised: TeacherEnsemble,
    x: np.ndarray,
    y: np.ndarray,
    shards: Sequence[np.ndarray],
    teacher_ids: Sequence[int],
    n_classes: int,
    spec: ModelSpec,
    settings: TeacherSettings,
    pool_x: np.ndarray,
    setup: PoolSetup[Extra],
    *,
    data_seed: int,
    progress: Callable[[int], None] | None = None,
) -> tuple[TeacherEnsemble, Extra]:
    """Train the teachers ``supervised`` (trained on ``shards`` of ``(x, y)``) on with the pool ``pool_x``,
    chunk by chunk with the step ``setup`` returns; the ensemble keeps its chunks.

    Every teacher draws its pool subset (:func:`pool_subsets`, ``settings.pool_per_teacher``) from its
    seed :func:`teacher_seed` ``(data_seed, id)``. ``pool_x`` holds unlabelled samples only. Returns the
    trained-on ensemble and ``setup``'s report. ``progress(done)``, if given, counts the teacher-epochs
    (``settings.pseudo_label_epochs`` per teacher) done so far.

    Raises
    ------
    ValueError
        If the pool is empty or its samples' shape differs from ``x``'s.
    """
    check_pool(x, pool_x)
    return _continue(supervised, x, y, shards, teacher_ids, n_classes, spec, settings, pool_x, setup,
                     data_seed=data_seed, progress=progress)


def _continue(
    supervised: TeacherEnsemble, x: np.ndarray, y: np.ndarray, shards: Sequence[np.ndarray],
    teacher_ids: Sequence[int], n_classes: int, spec: ModelSpec, settings: TeacherSettings,
    pool_x: np.ndarray, setup: PoolSetup[Extra], *, data_seed: int, progress: Callable[[int], None] | None,
) -> tuple[TeacherEnsemble, Extra]:
    """:func:`continue_on_pool` once the pool is checked."""
    seeds = [teacher_seed(data_seed, t) for t in supervised.teacher_ids]
    step, extra = setup(supervised, pool_subsets(len(pool_x), settings.pool_per_teacher, seeds))
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
        index = torch.stack([torch.from_numpy(shard_of[t]) for t in c.teacher_ids])

        def tick(epoch: int, before: int = done, width: int = len(c.teacher_ids)) -> None:
            if progress is not None:
                progress(before + epoch * width)

        params = step(ChunkInputs(c, rows, xt[index], yt[index], pool, seeds[rows], base, len(input_shape),
                                  tick))
        chunks.append(TeacherChunk(list(c.teacher_ids), params))
        done += len(c.teacher_ids) * settings.pseudo_label_epochs
    return TeacherEnsemble(supervised.teacher(supervised.teacher_ids[0]), chunks), extra


def train_on_pool(
    x: np.ndarray,
    y: np.ndarray,
    shards: Sequence[np.ndarray],
    teacher_ids: Sequence[int],
    n_classes: int,
    spec: ModelSpec,
    settings: TeacherSettings,
    pool_x: np.ndarray,
    setup: PoolSetup[Extra],
    *,
    data_seed: int,
    chunk: int = DEFAULT_CHUNK,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[TeacherEnsemble, Extra]:
    """Supervised training (:func:`train_ensemble`), then :func:`continue_on_pool` with ``setup``.

    ``progress(done, total)``, if given, counts the teacher-epochs of both
    (``len(teacher_ids) * (spec.epochs + settings.pseudo_label_epochs)``).

    Raises
    ------
    ValueError
        As :func:`train_ensemble` and :func:`continue_on_pool` (the pool is checked first, before the
        costly supervised training).
    """
    check_pool(x, pool_x)
    total = len(teacher_ids) * (spec.epochs + settings.pseudo_label_epochs)
    first = len(teacher_ids) * spec.epochs

    def supervised_part(done: int, _: int) -> None:
        if progress is not None:
            progress(done, total)

    def pool_part(done: int) -> None:
        if progress is not None:
            progress(first + done, total)

    supervised = train_ensemble(x, y, shards, teacher_ids, n_classes, spec, data_seed=data_seed, chunk=chunk,
                                progress=supervised_part)
    return _continue(supervised, x, y, shards, teacher_ids, n_classes, spec, settings, pool_x, setup,
                     data_seed=data_seed, progress=pool_part)
