"""Distance-correlation decorrelation of the passive parties' forward embeddings from the labels, the
defence Sun et al. propose against the forward-embedding attack ("Label Leakage and Protection from
Forward Embedding in Vertical Federated Learning", arXiv:2203.01451, 2022).

**What it protects against.** Split learning shapes a passive party's encoder so that its embeddings of
one class lie close together, and the party can cluster them to label its users
(:mod:`clients.vertical.embedding_attacks`). The label holder has both the embeddings it receives and the
labels, so it can add ``α · dCor(F_k, Y)`` per passive party ``k`` to its minibatch objective (``F_k``:
the ``(B, D)`` embeddings of the batch, ``Y``: its labels one-hot, ``α = strategy.dcor_weight``). The
term depends on the passive embeddings only, so it changes nothing of the label holder's own update:
it rides in the gradients returned to the passive parties and pushes their encoders towards embeddings
whose distances carry less label information. No new message is needed.

**Distance correlation** (Székely, Rizzo & Bakirov, "Measuring and testing dependence by correlation of
distances", Annals of Statistics 35(6), 2007; their empirical ``R_n``): for ``n`` paired samples, with
Euclidean distances ``a_kl = |X_k − X_l|`` and their double centring
``A_kl = a_kl − ā_k· − ā_·l + ā_··`` (likewise ``B`` from ``Y``), ``dCov²_n = (1/n²) Σ A_kl B_kl``,
``dVar²_n(X) = (1/n²) Σ A_kl²`` and ``dCor_n = √(dCov²_n / √(dVar²_n(X) · dVar²_n(Y)))`` (0 when a
variance is 0). It is in [0, 1], 1 for identical samples (or any rotation, shift and scaling of each
other), and its population value is 0 only for independent variables; the sample value of independent
samples is small but positive (its square shrinks like 1/n).

**What it does not give.** It is an empirical defence, not privacy noise: no differential-privacy
guarantee (the ε of the other protections does not move), and no statement about the gradients it
sends, which depend on the labels through the dCor term too (the attacks of
:mod:`clients.vertical.gradient_attacks` measure what they give away; gradient noise,
:mod:`clients.vertical.gradient_protection`, is the protection with a per-batch guarantee). A
batch-level dCor near 0 does not make the embeddings of all aligned users unclusterable; the
forward-embedding attack measures what is left.
"""

from __future__ import annotations

import torch


def _centred_distances(x: torch.Tensor) -> torch.Tensor:
    """Double-centred Euclidean distance matrix ``A`` of the rows of ``x`` ``(n, d)``; the distance is
    taken as exactly 0 (with gradient 0) between equal rows, where ``√`` has no derivative."""
    squared = (x[:, None, :] - x[None, :, :]).pow(2).sum(dim=2)
    positive = squared > 0
    dist = torch.where(positive, torch.sqrt(torch.where(positive, squared, torch.ones_like(squared))),
                       torch.zeros_like(squared))
    return dist - dist.mean(dim=0, keepdim=True) - dist.mean(dim=1, keepdim=True) + dist.mean()


def distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sample distance correlation ``dCor_n(x, y)`` of paired rows (Székely et al. 2007; module
    docstring), differentiable in both; ``x`` ``(n, p)``, ``y`` ``(n, q)``, a scalar in [0, 1].

    Raises
    ------
    ValueError
        If ``x`` or ``y`` is not 2-D or not finite, or they hold different numbers of rows (fewer than 2).
    """
    for name, value in (("x", x), ("y", y)):
        if value.ndim != 2:
            raise ValueError(f"{name} must be (samples, dim), got shape {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"{name} must be finite")
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"distance correlation needs the same number >= 2 of rows, got {len(x)} and "
                         f"{len(y)}")
    a, b = _centred_distances(x), _centred_distances(y)
    dcov2 = (a * b).mean()
    var2 = a.pow(2).mean() * b.pow(2).mean()
    if float(var2.detach()) <= 0:
        return dcov2 * 0.0  # a constant sample: dCor = 0 by definition
    # dCov²_n >= 0 in exact arithmetic (Székely et al. 2007); clamp the rounding below 0
    return torch.sqrt(torch.clamp(dcov2 / torch.sqrt(var2), min=1e-12))


def label_decorrelation_loss(
    embeddings: list[torch.Tensor], labels: torch.Tensor, n_classes: int
) -> torch.Tensor:
    """``Σ_k dCor(embeddings[k], one_hot(labels))`` over the passive parties' ``(B, D)`` embeddings of one
    batch (Sun et al. 2022's penalty, weighted by the caller); 0 for a batch of one user.

    Raises
    ------
    ValueError
        As :func:`distance_correlation`, or if ``labels`` is not 1-D with values in ``[0, n_classes)``.
    """
    if labels.ndim != 1 or (len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= n_classes)):
        raise ValueError(f"labels must be 1-D in [0, {n_classes}), got shape {tuple(labels.shape)}")
    if len(labels) < 2:
        return torch.zeros(())
    targets = torch.nn.functional.one_hot(labels, n_classes).to(torch.float32)
    return sum((distance_correlation(e, targets) for e in embeddings), torch.zeros(()))
