"""Where privacy noise comes from: a secret seed by default, a pinned one only for tests and benchmarks.

A differential-privacy guarantee assumes the noise is unknown to whoever sees the noised output (Dwork &
Roth, "The Algorithmic Foundations of Differential Privacy", 2014, §3): a seed anyone can learn (a public
run seed, a default) lets them replay the draws and subtract the noise. :func:`privacy_noise_seed` is the
one rule every mechanism of the project follows — the PATE vote fusion at the server
(``strategies.fusion.noise_generator``) and the vertical label holder's randomised response and
prototype noise (``clients.vertical.active_labels``) — so it lives on the ground floor both sides read.
"""

from __future__ import annotations

import secrets
import warnings

import numpy as np

SECRET_BITS = 128
"""Bits of OS entropy in a secret noise seed."""


class PrivacyWarning(UserWarning):
    """A legal but degenerate privacy setting: e.g. the best order sits at the edge of the grid, or the
    privacy noise is pinned by a seed (reproducible, so removable by anyone who knows it)."""


def check_noise_seed(seed: object, name: str = "the noise seed", unset: str = "None") -> int | None:
    """``seed`` if it is a valid noise seed — unset (secret noise) or an integer >= 0, a bool refused —
    else ValueError naming it ``name`` and its unset value ``unset`` (the run's configuration: "null").
    The one rule for :func:`privacy_noise_seed` and the runs' ``strategy.seed`` / ``strategy.noise_seed``."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"{name} must be {unset} (secret noise) or an integer >= 0, got {seed!r}")
    return int(seed)


def privacy_noise_seed(seed: int | None, *, stacklevel: int = 2) -> int:
    """The seed privacy noise is drawn from.

    ``None`` (every default): :data:`SECRET_BITS` bits of OS entropy (:func:`secrets.randbits`), so no one
    can reproduce the draws. An integer pins them for a test or a benchmark, with a
    :class:`PrivacyWarning` (pointing ``stacklevel`` frames up): anyone who knows the seed (and the code
    is public) can subtract the noise.

    Raises
    ------
    ValueError
        If ``seed`` is neither ``None`` nor an integer >= 0 (a bool is not one).
    """
    if check_noise_seed(seed) is None:
        return secrets.randbits(SECRET_BITS)
    warnings.warn(f"privacy noise seeded with seed={seed}: reproducible, and removable by anyone who knows "
                  "the seed; leave it unset (None) outside tests and benchmarks", PrivacyWarning,
                  stacklevel=stacklevel + 1)
    return int(seed)
