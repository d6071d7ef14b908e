"""Semi-supervised training of the PATE student on its own unlabeled pool (FixMatch), and query choice.

The student of ensemble-label distillation holds a large unlabeled pool of which the teachers label
only a few hundred samples (Papernot et al. 2018, "Scalable Private Learning with PATE", ICLR: the
student's semi-supervised learning is where most of its accuracy comes from). Samples no teacher sees
cost no privacy, so the student may train on all of them.

:func:`train_fixmatch` implements FixMatch (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised
Learning with Consistency and Confidence", NeurIPS): the model's prediction on a *weakly* augmented view
of an unlabeled sample becomes its pseudo-label when confident enough, and the model is trained to
predict that label on a *strongly* augmented view of the same sample (:func:`fixmatch_loss`, Eq. 2-4).
The augmentations here fit 1-D signals such as MNIST-1D (random shift with zero fill, amplitude scaling,
Gaussian noise, masking of a segment) and 2-D images (shift, cutout, noise).

:func:`select_queries` ranks pool samples by the student's own uncertainty, for the interactive variant
in which the student chooses which samples to ask (Papernot et al. 2018, Sec. 4.3).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from clients.training import predict_logits

SELECTION_STRATEGIES = ("margin", "entropy", "least_confident")


@dataclass(frozen=True)
class FixMatchConfig:
    """Hyper-parameters of :func:`train_fixmatch` (symbols of Sohn et al. 2020, Sec. 3).

    ``epochs`` counts passes over the *unlabeled* pool, each of ``ceil(N_u / (mu * batch_size))`` steps
    on ``batch_size`` labeled and ``mu * batch_size`` unlabeled samples. ``warmup_epochs`` first trains
    on the labeled samples alone (weak augmentation) for that many passes over the labeled set, so
    the first pseudo-labels come from a model that has seen the labels. ``label_smoothing`` softens the
    labeled targets (the teachers' answers are noisy). The learning rate follows a cosine decay
    (Sohn et al. 2020, Sec. 4) and the evaluated model is an exponential moving average of the weights
    with decay ``ema_decay`` (0 = the raw weights), ramped up as ``min(ema_decay, (1 + t) / (10 + t))`` at
    step ``t``. The defaults were chosen on the validation set of MNIST-1D with 320 answered labels, 8 %
    of them wrong (a lower threshold than the paper's 0.95 pseudo-labels more of the pool; smoothing
    helps against the wrong answers).
    """

    epochs: int = 60
    batch_size: int = 64
    mu: int = 7
    lr: float = 3e-3
    weight_decay: float = 1e-4
    threshold: float = 0.8
    weight: float = 1.0
    label_smoothing: float = 0.1
    warmup_epochs: int = 400
    ema_decay: float = 0.99
    weak_shift: int = 6
    strong_shift: int = 8
    strong_noise: float = 0.05
    strong_scale: float = 0.2
    cutout: int = 6

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 0, "batch_size": self.batch_size >= 1, "mu": self.mu >= 1,
            "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
            "threshold": 0.0 <= self.threshold <= 1.0, "weight": self.weight >= 0,
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0, "warmup_epochs": self.warmup_epochs >= 0,
            "ema_decay": 0.0 <= self.ema_decay < 1.0, "weak_shift": self.weak_shift >= 0,
            "strong_shift": self.strong_shift >= 0, "strong_noise": self.strong_noise >= 0,
            "strong_scale": 0.0 <= self.strong_scale < 1.0, "cutout": self.cutout >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            named = ", ".join(f"{n}={getattr(self, n)!r}" for n in bad)
            raise ValueError(f"invalid FixMatch config: {named}")


@dataclass(frozen=True)
class FixMatchStats:
    """What :func:`train_fixmatch` measured in its last epoch."""

    confident: int  # unlabeled samples whose weak-view confidence reached the threshold (last epoch)
    mask_rate: float  # their fraction of the unlabeled samples seen in the last epoch
    steps: int  # optimiser steps in all (warm-up included)


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift every sample by an independent offset in ``[-max_shift, max_shift]``, filling with zeros.

    ``x`` is ``(N, L)`` (1-D signals: shift along ``L``) or ``(N, H, W)`` (images: independent vertical
    and horizontal offsets).

    Raises
    ------
    ValueError
        If ``x`` is neither 2- nor 3-dimensional or ``max_shift`` is negative.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    if x.ndim not in (2, 3):
        raise ValueError(f"random_shift needs (N, L) or (N, H, W) inputs, got shape {tuple(x.shape)}")
    if max_shift == 0 or len(x) == 0:
        return x
    out = x
    for axis in range(1, x.ndim):
        size = x.shape[axis]
        offsets = torch.randint(-max_shift, max_shift + 1, (len(x),), generator=generator)
        source = torch.arange(size).unsqueeze(0) - offsets.unsqueeze(1)  # out[i, j] = x[i, j - offset_i]
        valid = (source >= 0) & (source < size)
        index = source.clamp(0, size - 1)
        shape = [len(x)] + [1] * (x.ndim - 1)
        shape[axis] = size
        index, valid = index.reshape(shape).expand_as(out), valid.reshape(shape).expand_as(out)
        out = torch.where(valid, torch.gather(out, axis, index), torch.zeros((), dtype=x.dtype))
    return out


def random_cutout(x: torch.Tensor, length: int, generator: torch.Generator) -> torch.Tensor:
    """Zero a random segment of ``length`` positions (1-D) or a ``length`` square (2-D) per sample.

    The segment's centre is uniform over the sample, so it may be clipped at the border (DeVries &
    Taylor 2017, "Improved Regularization of CNNs with Cutout", the variant FixMatch's strong
    augmentation ends with).
    """
    if length <= 0 or len(x) == 0:
        return x
    cut = torch.ones_like(x, dtype=torch.bool)
    for axis in range(1, x.ndim):
        size = x.shape[axis]
        start = torch.randint(0, size, (len(x),), generator=generator).unsqueeze(1) - length // 2
        pos = torch.arange(size).unsqueeze(0)
        inside = (pos >= start) & (pos < start + length)
        shape = [len(x)] + [1] * (x.ndim - 1)
        shape[axis] = size
        cut = cut & inside.reshape(shape)  # in 2-D a square: the intersection of both bands
    keep = ~cut
    return x * keep


def weak_augment(x: torch.Tensor, config: FixMatchConfig, generator: torch.Generator) -> torch.Tensor:
    """FixMatch's weak augmentation (Sohn et al. 2020, Sec. 2.3): a small random shift."""
    return random_shift(x, config.weak_shift, generator)


def strong_augment(x: torch.Tensor, config: FixMatchConfig, generator: torch.Generator) -> torch.Tensor:
    """FixMatch's strong augmentation (Sohn et al. 2020, Sec. 2.3), adapted to signals and small images.

    A larger random shift, a random amplitude scaling in ``[1 - strong_scale, 1 + strong_scale]``,
    additive Gaussian noise of standard deviation ``strong_noise``, then cutout of ``cutout`` positions.
    """
    out = random_shift(x, config.strong_shift, generator)
    if config.strong_scale > 0:
        scale = 1.0 + config.strong_scale * (2 * torch.rand(len(x), generator=generator) - 1)
        out = out * scale.reshape([-1] + [1] * (x.ndim - 1))
    if config.strong_noise > 0:
        out = out + config.strong_noise * torch.randn(out.shape, generator=generator)
    return random_cutout(out, config.cutout, generator)


def fixmatch_loss(
    logits_labeled: torch.Tensor,
    y: torch.Tensor,
    logits_weak: torch.Tensor,
    logits_strong: torch.Tensor,
    threshold: float,
    weight: float,
    *,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, float]:
    """FixMatch's loss ``l_s + lambda_u * l_u`` (Sohn et al. 2020, Eq. 2-4); return it and the mask rate.

    ``l_s`` (Eq. 2) is the cross-entropy of the labeled logits (weak view) with ``y``, optionally
    label-smoothed. With ``q_b = softmax(logits_weak[b])`` treated as a constant (no gradient) and
    ``q̂_b = argmax q_b``, the unsupervised loss (Eq. 4) is

        ``l_u = (1 / (mu B)) * sum_b 1[max q_b >= threshold] * H(q̂_b, softmax(logits_strong[b]))``,

    the mean over the whole unlabeled batch (masked samples count in the denominator). The mask rate is
    the fraction of that batch at or above the threshold.

    Raises
    ------
    ValueError
        If the weak and strong logits differ in shape or the labeled logits and ``y`` in length.
    """
    if logits_weak.shape != logits_strong.shape:
        raise ValueError(f"logits_weak and logits_strong must have one shape, got {tuple(logits_weak.shape)} "
                         f"and {tuple(logits_strong.shape)}")
    if len(logits_labeled) != len(y):
        raise ValueError(f"logits_labeled and y differ in length: {len(logits_labeled)} vs {len(y)}")
    supervised = F.cross_entropy(logits_labeled, y, label_smoothing=label_smoothing)
    if len(logits_weak) == 0:
        return supervised, 0.0
    probs = torch.softmax(logits_weak.detach(), dim=1)
    confidence, pseudo = probs.max(dim=1)
    mask = (confidence >= threshold).to(logits_strong.dtype)
    unsupervised = (F.cross_entropy(logits_strong, pseudo, reduction="none") * mask).mean()
    return supervised + weight * unsupervised, float(mask.mean())


def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.state_dict().values(), model.state_dict().values(), strict=True):
            if e.dtype.is_floating_point:
                e.mul_(decay).add_(p, alpha=1.0 - decay)
            else:
                e.copy_(p)


def train_fixmatch(
    model: nn.Module,
    x_labeled: np.ndarray,
    y_labeled: np.ndarray,
    x_unlabeled: np.ndarray,
    config: FixMatchConfig,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> FixMatchStats:
    """Train ``model`` in place with FixMatch (Sohn et al. 2020, Algorithm 1) using Adam.

    Each step draws ``batch_size`` labeled samples (cycling through reshuffled passes of the labeled
    set) and ``mu * batch_size`` unlabeled ones, and minimises :func:`fixmatch_loss` on the weak labeled
    view and the weak/strong unlabeled views. With ``ema_decay > 0`` the exponential moving average of
    the weights is copied into ``model`` at the end. With no unlabeled sample only the warm-up runs,
    followed by ``epochs`` labeled passes. ``progress(steps_done, steps_total)``, if given, is called
    after every optimiser step (warm-up included).

    Raises
    ------
    ValueError
        If ``x_labeled`` and ``y_labeled`` differ in length or are empty, or the unlabeled samples'
        shape differs from the labeled ones'.
    """
    if len(x_labeled) != len(y_labeled):
        raise ValueError(f"x_labeled and y_labeled differ in length: {len(x_labeled)} vs {len(y_labeled)}")
    if len(y_labeled) == 0:
        raise ValueError("FixMatch needs at least one labeled sample, got none")
    if len(x_unlabeled) and tuple(x_unlabeled.shape[1:]) != tuple(x_labeled.shape[1:]):
        raise ValueError(f"x_unlabeled samples have shape {tuple(x_unlabeled.shape[1:])}, labeled ones "
                         f"{tuple(x_labeled.shape[1:])}")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    xl = torch.from_numpy(np.asarray(x_labeled, dtype=np.float32))
    yl = torch.from_numpy(np.asarray(y_labeled, dtype=np.int64))
    xu = torch.from_numpy(np.asarray(x_unlabeled, dtype=np.float32))
    batch_u = config.mu * config.batch_size
    warmup_steps = config.warmup_epochs * math.ceil(len(yl) / config.batch_size)
    steps_per_epoch = math.ceil(len(xu) / batch_u) if len(xu) else math.ceil(len(yl) / config.batch_size)
    total = warmup_steps + config.epochs * steps_per_epoch
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: math.cos(7 * math.pi * min(step, total) / (16 * max(total, 1))))
    ema = copy.deepcopy(model) if config.ema_decay > 0 else None
    labeled_order = torch.zeros(0, dtype=torch.int64)

    def labeled_batch() -> torch.Tensor:
        nonlocal labeled_order
        while len(labeled_order) < config.batch_size:
            labeled_order = torch.cat([labeled_order, torch.randperm(len(yl), generator=generator)])
        batch, labeled_order = labeled_order[:config.batch_size], labeled_order[config.batch_size:]
        return batch

    done = 0

    def step(loss: torch.Tensor) -> None:
        nonlocal done
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        done += 1
        if ema is not None:  # the decay ramps up so that short runs do not average in the initial weights
            _ema_update(ema, model, min(config.ema_decay, (1 + done) / (10 + done)))
        if progress is not None:
            progress(done, total)

    model.train()
    for _ in range(warmup_steps if len(xu) else warmup_steps + config.epochs * steps_per_epoch):
        batch = labeled_batch()
        step(F.cross_entropy(model(weak_augment(xl[batch], config, generator)), yl[batch],
                             label_smoothing=config.label_smoothing))
    confident, seen = 0, 0
    for epoch in range(config.epochs if len(xu) else 0):
        order = torch.randperm(len(xu), generator=generator)
        last = epoch == config.epochs - 1
        for start in range(0, len(xu), batch_u):
            u = xu[order[start:start + batch_u]]
            batch = labeled_batch()
            inputs = torch.cat([weak_augment(xl[batch], config, generator),
                                weak_augment(u, config, generator), strong_augment(u, config, generator)])
            logits = model(inputs)
            n_l = len(batch)
            loss, mask_rate = fixmatch_loss(logits[:n_l], yl[batch], logits[n_l:n_l + len(u)],
                                            logits[n_l + len(u):], config.threshold, config.weight,
                                            label_smoothing=config.label_smoothing)
            step(loss)
            if last:
                confident += int(round(mask_rate * len(u)))
                seen += len(u)
    if ema is not None:
        model.load_state_dict(ema.state_dict())
    model.eval()
    return FixMatchStats(confident=confident, mask_rate=confident / seen if seen else 0.0, steps=total)


def select_queries(
    model: nn.Module,
    x_pool: np.ndarray,
    k: int,
    *,
    strategy: str = "margin",
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Positions in ``x_pool`` of the ``k`` samples the student is least sure of, most uncertain first.

    The interactive student of Papernot et al. (2018, Sec. 4.3) asks the teachers about the samples its
    own model finds hard. Uncertainty is the student's softmax ``p``: ``margin`` ranks by the smallest
    gap between the two largest probabilities, ``entropy`` by the largest ``-sum p log p``,
    ``least_confident`` by the smallest ``max p``. Ties keep pool order. Positions in ``exclude``
    (e.g. already answered) are never returned; fewer than ``k`` come back if the pool runs out.

    Raises
    ------
    ValueError
        If ``k`` < 0, ``strategy`` is unknown, or ``exclude`` holds a position outside the pool.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    if strategy not in SELECTION_STRATEGIES:
        raise ValueError(f"unknown selection strategy {strategy!r}; choose one of {SELECTION_STRATEGIES}")
    candidates = np.ones(len(x_pool), dtype=bool)
    if exclude is not None and len(exclude):
        exclude = np.asarray(exclude, dtype=np.int64)
        if exclude.min() < 0 or exclude.max() >= len(x_pool):
            raise ValueError(f"exclude positions must lie in [0, {len(x_pool)}), got "
                             f"[{exclude.min()}, {exclude.max()}]")
        candidates[exclude] = False
    positions = np.flatnonzero(candidates)
    if k == 0 or len(positions) == 0:
        return np.zeros(0, dtype=np.int64)
    logits = torch.from_numpy(predict_logits(model, x_pool[positions]))
    probs = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    if strategy == "margin":
        top2 = np.sort(probs, axis=1)[:, -2:] if probs.shape[1] > 1 else np.c_[np.zeros(len(probs)), probs]
        score = top2[:, 1] - top2[:, 0]  # small = uncertain
    elif strategy == "entropy":
        score = (probs * np.log(np.clip(probs, 1e-12, None))).sum(axis=1)  # = -entropy
    else:
        score = probs.max(axis=1)
    return positions[np.argsort(score, kind="stable")[:k]].astype(np.int64)
