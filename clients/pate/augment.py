"""Label-preserving data augmentation per data kind, driven by a seeded ``torch.Generator``.

Random translation with zero fill, the augmentation the MNIST-1D paper's models rely on
(Greydanus 2020, "Scaling down deep learning", the shifted-template construction of the data) and the
classic pad-and-random-crop of image classifiers (Krizhevsky et al. 2012; He et al. 2016):

- 1-D signals ``(..., L)``: each sample moves by ``s`` positions, ``s`` uniform in ``[-max_shift,
  max_shift]``; positions shifted in from outside are zero;
- 2-D images ``(..., H, W)``: each sample moves by ``(dy, dx)``, each uniform in ``[-max_shift,
  max_shift]``, which equals zero-padding by ``max_shift`` and cropping a random ``H x W`` window.

Drawing (:func:`draw_shifts`) and applying (:func:`apply_shifts`) are separate so that a batched
ensemble can draw each teacher's shifts from that teacher's own generator and apply them all in one
vectorised call; :func:`random_shift` does both for one batch. Shapes and labels never change, and
``max_shift = 0`` is the identity that draws nothing from the generator.
"""

from __future__ import annotations

import torch

INPUT_RANKS = (1, 2)  # 1-D signals, 2-D images


def _check(max_shift: int, input_rank: int) -> None:
    if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
        raise ValueError(f"max_shift must be an integer >= 0, got {max_shift!r}")
    if input_rank not in INPUT_RANKS:
        raise ValueError(f"input_rank must be one of {INPUT_RANKS} (1-D signals, 2-D images), "
                         f"got {input_rank}")


def draw_shifts(n: int, max_shift: int, input_rank: int, generator: torch.Generator) -> torch.Tensor:
    """Draw ``n`` per-sample shifts uniform in ``[-max_shift, max_shift]`` from ``generator``.

    Returns
    -------
    torch.Tensor
        int64 of shape ``(n,)`` for 1-D signals (``input_rank=1``) or ``(n, 2)`` (``dy, dx``) for
        2-D images (``input_rank=2``).

    Raises
    ------
    ValueError
        If ``max_shift`` is negative or not an integer, or ``input_rank`` is not 1 or 2.
    """
    _check(max_shift, input_rank)
    shape = (n,) if input_rank == 1 else (n, 2)
    return torch.randint(-max_shift, max_shift + 1, shape, generator=generator)


def _shift_along(x: torch.Tensor, shifts: torch.Tensor, axis: int) -> torch.Tensor:
    """Move ``x`` along ``axis`` (negative index) by ``shifts`` (one per leading sample), zero fill."""
    length, trailing = x.shape[axis], -axis - 1
    positions = torch.arange(length, device=x.device).view((length,) + (1,) * trailing)
    # source position of every output position: out[i] = x[i - s]
    source = positions - shifts.view(tuple(shifts.shape) + (1,) * (x.dim() - shifts.dim()))
    valid = (source >= 0) & (source < length)
    index = source.clamp(0, length - 1).expand(x.shape)
    return torch.gather(x, x.dim() + axis, index) * valid.to(x.dtype)


def apply_shifts(x: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Translate every sample of ``x`` by its own shift, filling with zeros.

    Parameters
    ----------
    x
        ``(*B, L)`` signals with ``shifts`` of shape ``B``, or ``(*B, H, W)`` images with ``shifts``
        of shape ``(*B, 2)`` (rows, then columns); ``B`` is any number of leading sample axes (e.g.
        teachers and batch).
    shifts
        Integer shifts, positive towards higher indices: ``out[..., i] = x[..., i - s]``.

    Raises
    ------
    ValueError
        If the shapes of ``x`` and ``shifts`` do not fit either layout.
    """
    if shifts.dtype.is_floating_point:
        raise ValueError(f"shifts must be integers, got dtype {shifts.dtype}")
    if shifts.dim() == x.dim() - 1 and tuple(shifts.shape) == tuple(x.shape[:-1]):
        return _shift_along(x, shifts, -1)
    if (x.dim() >= 2 and shifts.dim() == x.dim() - 1 and shifts.shape[-1] == 2
            and tuple(shifts.shape[:-1]) == tuple(x.shape[:-2])):
        rows = _shift_along(x, shifts[..., 0], -2)
        return _shift_along(rows, shifts[..., 1], -1)
    raise ValueError(f"shifts of shape {tuple(shifts.shape)} fit neither (*B, L) signals nor (*B, H, W) "
                     f"images for x of shape {tuple(x.shape)}")


def random_shift(
    x: torch.Tensor, max_shift: int, generator: torch.Generator, *, input_rank: int
) -> torch.Tensor:
    """One random zero-fill translation per sample of the batch ``x`` (``(N, *input_shape)``).

    ``max_shift = 0`` returns ``x`` itself and draws nothing from ``generator``.

    Raises
    ------
    ValueError
        If ``max_shift`` or ``input_rank`` is invalid, or ``x`` is not ``(N, *input_shape)`` with an
        input of rank ``input_rank``.
    """
    _check(max_shift, input_rank)
    if x.dim() != input_rank + 1:
        raise ValueError(f"x must be (N, *input_shape) with a rank-{input_rank} input, "
                         f"got shape {tuple(x.shape)}")
    if max_shift == 0:
        return x
    return apply_shifts(x, draw_shifts(x.shape[0], max_shift, input_rank, generator))
