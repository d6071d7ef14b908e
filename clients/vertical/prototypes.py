"""Class prototypes, prototype losses and prototype pseudo-labels (pure torch, no Flower).

The method is the vertical prototype exchange of the patent behind issue 5: the label
holder computes, per class, the centre of the aligned samples' features ("prototype"), in its own
feature space ("first prototypes") and in every passive party's space ("second prototypes"). Each
party then pulls the features of its *non-aligned* samples towards the prototype of their class: the
active party with its labels ("first loss"), a passive party with the class of the nearest prototype,
kept only when confident ("third loss"). The distance is the raw squared Euclidean distance (a probe
found cosine / normalised features useless).

Classes without enough aligned samples have no prototype: every function takes a boolean ``valid``
mask of shape ``(C,)`` and ignores invalid classes, so a class absent from the aligned set (common at
aligned fractions of a few percent) is harmless.
"""

from __future__ import annotations

import torch


def class_prototypes(
    features: torch.Tensor, labels: torch.Tensor, n_classes: int, *, min_count: int = 1
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-class mean of ``features``: ``(prototypes (C, D), counts (C,), valid (C,))``.

    ``valid[c]`` is ``counts[c] >= min_count``; an invalid class's prototype row is zero.

    Raises
    ------
    ValueError
        If shapes disagree, a label is outside ``[0, n_classes)``, features are not finite, or
        ``min_count`` < 1.
    """
    check_features(features, what="features")
    if labels.ndim != 1 or len(labels) != len(features):
        raise ValueError(f"labels must have shape ({len(features)},), got {tuple(labels.shape)}")
    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes):
        raise ValueError(f"labels must lie in [0, {n_classes}), got range "
                         f"[{int(labels.min())}, {int(labels.max())}]")
    sums = torch.zeros(n_classes, features.shape[1], dtype=features.dtype)
    sums.index_add_(0, labels, features)
    counts = torch.bincount(labels, minlength=n_classes).to(features.dtype)
    valid = counts >= min_count
    prototypes = torch.where(valid[:, None], sums / counts.clamp(min=1)[:, None], torch.zeros_like(sums))
    return prototypes, counts, valid


def check_features(features: torch.Tensor, *, what: str, dim: int | None = None) -> None:
    """Raise ``ValueError`` unless ``features`` is a finite ``(N, D)`` tensor (with ``D == dim`` if given)."""
    if features.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (N, D) tensor, got shape {tuple(features.shape)}")
    if dim is not None and features.shape[1] != dim:
        raise ValueError(f"{what} must have feature dimension {dim}, got {features.shape[1]}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{what} contain NaN or inf")


def squared_distances(features: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """``(N, C)`` squared Euclidean distances between every feature row and every prototype."""
    return (features[:, None, :] - prototypes[None, :, :]).pow(2).sum(dim=2)


def prototype_pull_loss(
    features: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Mean over samples of ``||f_i - p_{t_i}||^2``, skipping samples whose class has no prototype.

    This is the first loss (active party, ``targets`` = labels) and the third loss (passive party,
    ``targets`` = pseudo-labels) of the method. Returns a zero that still carries a graph when no
    sample qualifies.
    """
    keep = valid[targets]
    if not bool(keep.any()):
        return features.sum() * 0.0
    diff = features[keep] - prototypes[targets[keep]].detach()
    return diff.pow(2).sum(dim=1).mean()


def prototype_logits(
    features: torch.Tensor, prototypes: torch.Tensor, valid: torch.Tensor, temperature: float
) -> torch.Tensor:
    """``(N, C)`` logits ``-||f_i - p_c||^2 / temperature`` of a nearest-prototype classifier.

    Prototypical networks (Snell et al., NeurIPS 2017, eq. 2); classes without a prototype get
    ``-inf``. The prototypes are treated as constants (no gradient flows into them).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = -squared_distances(features, prototypes.detach()) / temperature
    return logits.masked_fill(~valid[None, :], float("-inf"))


def prototype_classification_loss(
    features: torch.Tensor,
    targets: torch.Tensor,
    prototypes: torch.Tensor,
    valid: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """Cross-entropy of the nearest-prototype classifier (:func:`prototype_logits`) on labelled rows.

    Unlike the pull of :func:`prototype_pull_loss`, it also pushes each feature away from the other
    classes' prototypes, so features cluster by class instead of shrinking. Rows whose class has no
    prototype are skipped; returns a zero that still carries a graph when no row qualifies.
    """
    keep = valid[targets]
    if not bool(keep.any()) or int(valid.sum()) < 2:
        return features.sum() * 0.0
    logits = prototype_logits(features[keep], prototypes, valid, temperature)
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def prototype_temperature(prototypes: torch.Tensor, valid: torch.Tensor, scale: float) -> float:
    """Softmax temperature tied to the feature scale: ``scale`` × mean squared inter-prototype distance.

    The pulls shrink feature norms over training, so a fixed temperature would make every softmax
    over negative distances flat and the confidence threshold would reject every sample; tying the
    temperature to the prototypes' own spread keeps the confidence scale-free.
    """
    if scale <= 0:
        raise ValueError(f"temperature scale must be > 0, got {scale}")
    protos = prototypes[valid]
    if len(protos) < 2:
        return scale
    d = squared_distances(protos, protos)
    k = len(protos)
    mean = float(d.sum() / (k * (k - 1)))
    return scale * max(mean, 1e-12)


def pseudo_labels(
    features: torch.Tensor,
    prototypes: torch.Tensor,
    valid: torch.Tensor,
    *,
    threshold: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nearest-prototype class, its confidence and the keep mask ``confidence >= threshold``.

    Confidence is the largest entry of ``softmax(-d^2 / temperature)`` over the valid prototypes.

    Raises
    ------
    ValueError
        If ``threshold`` is outside [0, 1], ``temperature`` <= 0, or no prototype is valid.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not bool(valid.any()):
        raise ValueError("no valid prototype: every class lacks aligned samples")
    logits = -squared_distances(features, prototypes) / temperature
    logits = logits.masked_fill(~valid[None, :], float("-inf"))
    probs = torch.softmax(logits, dim=1)
    confidence, labels = probs.max(dim=1)
    return labels, confidence, confidence >= threshold


def nearest_prototype(features: torch.Tensor, prototypes: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Class of the nearest valid prototype for every row (``-1`` if no prototype is valid)."""
    if not bool(valid.any()):
        return torch.full((len(features),), -1, dtype=torch.long)
    d = squared_distances(features, prototypes).masked_fill(~valid[None, :], float("inf"))
    return d.argmin(dim=1)


def smooth_prototypes(
    previous: torch.Tensor | None,
    previous_valid: torch.Tensor | None,
    current: torch.Tensor,
    current_valid: torch.Tensor,
    momentum: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exponential moving average across rounds: ``m·previous + (1 - m)·current`` per class.

    A class valid in only one of the two keeps that one's prototype; ``momentum = 0`` disables the
    smoothing.
    """
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if previous is None or previous_valid is None:
        return current.clone(), current_valid.clone()
    both = previous_valid & current_valid
    out = torch.where(current_valid[:, None], current, previous)
    out = torch.where(both[:, None], momentum * previous + (1.0 - momentum) * current, out)
    return out, previous_valid | current_valid
