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
keeps the method's predictor only where it is more accurate on its validation users beyond the noise
of that paired comparison (:func:`population_sigmas` standard deviations) and does not answer one class
for everyone; else the baseline, ties included (:func:`choose_predictors`). Evaluation and the saved
model (read by ``clients.vertical.predict``) apply the same choice (:func:`apply_choice`), so served
predictions match the reported accuracies. Users only a passive party holds have no label-holder
baseline and are left as they are.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from clients.vertical.party_base import seeded_generator
from protocol.vertical import GUARDED_POPULATIONS, VerticalConfig, VerticalStrategyConfig

METHOD, LOCAL = "method", "local"
"""The two predictors the guard chooses between for a population."""


def population_sigmas(s: VerticalStrategyConfig) -> dict[str, float]:
    """How many standard deviations of the paired comparison the method must win by to serve each guarded
    population (:func:`wins_beyond_noise`): ``strategy.guard_sigmas_aligned`` and
    ``strategy.guard_sigmas_active_only``.

    Why the defaults differ (1 and 2): a wrong "method" costs the label holder the same in both
    populations, but how often the method is truly better differs. For aligned users the method's
    predictor reads every party's features, which the baseline never sees; for users only the label holder
    holds it is the label holder's own head on its own columns, differing from the baseline only by the
    prototype pulls, so a validation win there is more often noise. On 27-85 validation users of the real
    tables, 1 σ on both put the label holder's own users below training alone in 3 of 27 tuned runs (each
    time the active-only choice), and 2 σ on both kept every population at the baseline where the fused
    predictor gained 4 of 27 wine validation users (4 = 2·√4 is not beyond 2 σ).
    """
    return {"aligned": s.guard_sigmas_aligned, "active_only": s.guard_sigmas_active_only}


def guarded(cfg: VerticalConfig) -> bool:
    """Whether a run of ``cfg`` trains the local-only baseline: guard on and split learning on (without
    split learning the run *is* the local-only baseline)."""
    return cfg.strategy.guard == "validation" and cfg.strategy.split_learning


def baseline_config(cfg: VerticalConfig) -> VerticalConfig:
    """The settings of the local-only baseline: ``cfg`` as the ``active_only`` baseline (no split learning,
    no prototypes, local head on; no label protection, which only concerns what passive parties see;
    no guard or tuning of its own). Same seed, model, epochs, optimiser and batch size, so its training is
    that baseline's run."""
    strategy = dataclasses.replace(cfg.strategy, split_learning=False, prototypes=False, local_head=True,
                                   label_rr_epsilon=0.0, guard="off", tune="off")
    return dataclasses.replace(cfg, strategy=strategy)  # validated again by __post_init__


class LocalBaseline:
    """The local-only baseline itself: an encoder, a local head and their optimiser, nothing else.

    It starts from copies of the label holder's *initial* encoder and head, which are the ``active_only``
    baseline's initial weights (both are built from the same seed and model settings), and trains as that
    baseline's local pass does (:meth:`train_pass`): every labelled row in the seeded order of the epoch,
    plain cross-entropy on the true labels, Adam with the same settings. Its state is those two modules
    and the optimiser's moments (no top model, alignment or prototypes, which it never uses).
    """

    def __init__(self, encoder: nn.Module, head: nn.Module, cfg: VerticalConfig) -> None:
        self.cfg = baseline_config(cfg)
        self.encoder, self.head = copy.deepcopy(encoder), copy.deepcopy(head)
        s = self.cfg.strategy
        self.optimiser = torch.optim.Adam(self.parameters(), lr=s.lr, weight_decay=s.weight_decay)

    def parameters(self) -> list[nn.Parameter]:
        return [*self.encoder.parameters(), *self.head.parameters()]

    def train_pass(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> None:
        """One epoch of the baseline on every labelled row ``x``, ``y`` of the label holder."""
        s = self.cfg.strategy
        rows = np.arange(len(y))
        order = rows[torch.randperm(len(rows), generator=seeded_generator(self.cfg.seed, epoch, 1)).numpy()]
        self.encoder.train()
        for start in range(0, len(order), s.local_batch_size):
            batch = torch.from_numpy(order[start:start + s.local_batch_size])
            features = self.encoder(x[batch])
            loss = features.sum() * 0.0 + nn.functional.cross_entropy(self.head(features), y[batch])
            self.optimiser.zero_grad()
            loss.backward()
            self.optimiser.step()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Classes of ``x``: the head on the encoder's features."""
        self.encoder.eval()
        self.head.eval()
        with torch.no_grad():
            return torch.log_softmax(self.head(self.encoder(x)), dim=1).argmax(dim=1)

    def modules(self) -> dict[str, nn.Module]:
        """What the saved model keeps of it (``clients.vertical.predict`` applies them)."""
        return {"encoder": self.encoder, "head": self.head}

    def state(self) -> dict[str, Any]:
        return {"encoder": self.encoder.state_dict(), "head": self.head.state_dict(),
                "optimiser": self.optimiser.state_dict()}

    def load(self, state: dict[str, Any]) -> None:
        self.encoder.load_state_dict(state["encoder"])
        self.head.load_state_dict(state["head"])
        self.optimiser.load_state_dict(state["optimiser"])


def accuracy(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Share of ``predicted == labels`` (a class ``-1``, no predictor, is never right)."""
    if len(labels) == 0:
        raise ValueError("the guard needs at least one labelled validation user")
    return float((predicted == labels).double().mean())


def choose_predictors(
    method: Mapping[str, torch.Tensor], local: torch.Tensor, labels: torch.Tensor,
    sigmas: Mapping[str, float],
) -> dict[str, dict[str, float | str]]:
    """Per guarded population: ``chosen`` (``"method"`` or ``"local"``) and the validation accuracies
    ``method_val`` and ``local_val``.

    ``method`` maps each population to the method's classes of the validation users, ``local`` holds the
    baseline's classes of the same users and ``labels`` their true classes. The method serves a
    population only if it wins beyond the noise of a paired comparison on these users
    (:func:`wins_beyond_noise` at ``sigmas[population]``, e.g. :func:`population_sigmas`) and does not
    put every user in one class where the baseline does not (a head that answers one class for everyone
    is a defect, however accurate on a skewed validation set). Otherwise, ties included, the baseline
    serves: it is what the label holder gets alone.
    """
    out: dict[str, dict[str, float | str]] = {}
    local_val = accuracy(local, labels)
    local_collapsed = _one_class(local, labels)
    for population in GUARDED_POPULATIONS:
        predicted = method[population]
        method_val = accuracy(predicted, labels)
        collapsed = _one_class(predicted, labels) and not local_collapsed
        wins = wins_beyond_noise(predicted == labels, local == labels, sigmas[population]) and not collapsed
        out[population] = {"chosen": METHOD if wins else LOCAL, "method_val": method_val,
                           "local_val": local_val}
    return out


def wins_beyond_noise(method_right: torch.Tensor, local_right: torch.Tensor, sigmas: float) -> bool:
    """Whether the method is right for more validation users than the baseline by more than ``sigmas``
    standard deviations of that difference under equal accuracy: with ``b`` users only the method gets
    right and ``c`` only the baseline, ``b - c > sigmas · sqrt(b + c)``.

    McNemar's paired test (McNemar 1947, "Note on the sampling error of the difference between correlated
    proportions or percentages"): if the two predictors are equally accurate, ``b`` given ``b + c`` is
    Binomial(``b + c``, 1/2), so ``b - c`` has mean 0 and standard deviation ``sqrt(b + c)``: a method
    no better than the baseline wins about 16 % of the time at ``sigmas = 1`` and 2.3 % at 2 (one-sided,
    normal approximation). ``sigmas = 0``: any strict win.
    """
    b = int((method_right & ~local_right).sum())
    c = int((local_right & ~method_right).sum())
    return b - c > sigmas * math.sqrt(b + c)


def _one_class(predicted: torch.Tensor, labels: torch.Tensor) -> bool:
    """Whether ``predicted`` gives every user the same class though ``labels`` hold more than one."""
    return len(torch.unique(predicted)) == 1 and len(torch.unique(labels)) > 1


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
