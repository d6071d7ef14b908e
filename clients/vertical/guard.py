"""The label holder's guard: never serve a population worse, on validation, than training alone.

With ``strategy.guard = "validation"`` the active party trains, beside the method, a **local-only
baseline**: a second encoder + local head on all its own labelled users, trained exactly as the
``active_only`` baseline of the benchmarks trains (:func:`baseline_config`: the same settings with
split learning and prototypes off, the same seeded initial weights, minibatch order and optimiser, one
pass per epoch inside the active party's local pass). It costs no round trip (it rides in the local
pass the protocol already sends) and no privacy: it reads only the label holder's own rows and labels,
and nothing of it leaves the party — the server learns only which predictor serves each population and
the two validation accuracies, as it already learns every validation accuracy.

After training, for each population of :data:`protocol.vertical.GUARDED_POPULATIONS` — aligned users
(the method's predictor: the chosen fusion over every party's features) and users only the label holder
holds (the method's predictor: its local head, or its nearest prototype without one) — the active party
keeps whichever of the method's predictor and the baseline is more accurate on its validation users,
the method's on ties (:func:`choose_predictors`). Evaluation and the saved model (read by
``clients.vertical.predict``) apply the same choice (:func:`apply_choice`), so served predictions match
the reported accuracies. Users only a passive party holds have no label-holder baseline and are left
as they are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch

from protocol.vertical import GUARDED_POPULATIONS, VerticalConfig

METHOD, LOCAL = "method", "local"
"""The two predictors the guard chooses between for a population."""


def guarded(cfg: VerticalConfig) -> bool:
    """Whether a run of ``cfg`` trains the local-only baseline: guard on and split learning on (without
    split learning the run *is* the local-only baseline)."""
    return cfg.strategy.guard == "validation" and cfg.strategy.split_learning


def baseline_config(cfg: VerticalConfig) -> VerticalConfig:
    """The settings of the local-only baseline: ``cfg`` as the ``active_only`` baseline (no split learning,
    no prototypes, local head on; no label protection, which only concerns what passive parties see;
    no guard of its own). Same seed, model, epochs, optimiser and batch size, so its training is that
    baseline's run."""
    strategy = dataclasses.replace(cfg.strategy, split_learning=False, prototypes=False, local_head=True,
                                   label_rr_epsilon=0.0, guard="off")
    return dataclasses.replace(cfg, strategy=strategy)  # validated again by __post_init__


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``predicted == labels`` (a class ``-1``, no predictor, is never right)."""
    if len(labels) == 0:
        raise ValueError("the guard needs at least one labelled validation user")
    return float((predicted == labels).double().mean())


def choose_predictors(
    method: Mapping[str, torch.Tensor], local: torch.Tensor, labels: torch.Tensor
) -> dict[str, dict[str, float | str]]:
    """Per guarded population: ``chosen`` (``"method"`` or ``"local"``, the method's on ties) and the
    validation accuracies ``method_val`` and ``local_val``.

    ``method`` maps each population to the method's classes of the validation users, ``local`` holds the
    baseline's classes of the same users and ``labels`` their true classes.
    """
    out: dict[str, dict[str, float | str]] = {}
    local_val = accuracy(local, labels)
    for population in GUARDED_POPULATIONS:
        method_val = accuracy(method[population], labels)
        out[population] = {"chosen": LOCAL if local_val > method_val else METHOD,
                           "method_val": method_val, "local_val": local_val}
    return out


def apply_choice(
    method: Mapping[str, torch.Tensor], local: torch.Tensor | None, chosen: Mapping[str, str]
) -> dict[str, torch.Tensor]:
    """The classes served: the baseline's ``local`` for every population whose ``chosen`` is ``"local"``,
    the method's otherwise (``local`` may be ``None`` when nothing chose it)."""
    out = dict(method)
    for population, choice in chosen.items():
        if choice == LOCAL:
            if local is None:
                raise ValueError(f"the guard chose the local baseline for {population} users, "
                                 "but no baseline was given")
            out[population] = local
    return out
