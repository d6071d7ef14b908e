"""Plain supervised training and prediction loops for in-memory numpy data (CPU)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :func:`train_classifier`."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.batch_size < 1 or self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(f"invalid training config {self}: need epochs >= 0, batch_size >= 1, "
                             "lr > 0, weight_decay >= 0")


def check_inputs(x: np.ndarray, input_shape: tuple[int, ...], what: str = "inputs") -> np.ndarray:
    """Return ``x`` as float32 after checking its per-sample shape and finiteness.

    Raises
    ------
    ValueError
        If ``x`` is not ``(N, *input_shape)`` or holds NaN/inf.
    """
    x = np.asarray(x)
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(f"{what} must have shape (N, {', '.join(map(str, input_shape))}), got {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"{what} must be real numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contain NaN or inf")
    return x.astype(np.float32, copy=False)


def train_classifier(
    model: nn.Module, x: np.ndarray, y: np.ndarray, config: TrainConfig, *, seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> float:
    """Train ``model`` with Adam and cross-entropy on (``x``, ``y``); return the last epoch's mean loss.

    ``progress(epoch, config.epochs)``, if given, is called after every epoch.
    """
    if len(x) != len(y):
        raise ValueError(f"x and y differ in length: {len(x)} vs {len(y)}")
    if len(y) == 0:
        raise ValueError("cannot train on an empty set")
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    yt = torch.from_numpy(np.asarray(y, dtype=np.int64))
    optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    last = float("nan")
    for epoch in range(config.epochs):
        order = torch.randperm(len(yt), generator=generator)
        total = 0.0
        for start in range(0, len(yt), config.batch_size):
            batch = order[start:start + config.batch_size]
            optimiser.zero_grad()
            loss = loss_fn(model(xt[batch]), yt[batch])
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(batch)
        last = total / len(yt)
        if progress is not None:
            progress(epoch + 1, config.epochs)
    return last


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Class logits of ``model`` on ``x`` as a ``(N, C)`` float32 array."""
    model.eval()
    xt = torch.from_numpy(np.asarray(x, dtype=np.float32))
    out = [model(xt[i:i + batch_size]) for i in range(0, len(xt), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of ``model`` on (``x``, ``y``)."""
    if len(y) == 0:
        return float("nan")
    return float(np.mean(predict_logits(model, x).argmax(axis=1) == np.asarray(y)))
