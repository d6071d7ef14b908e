"""``strategy.tune = auto``: the label holder picks the prototype method's weights on its validation users.

It is the default wherever it applies: the schema's ``tune`` (``protocol.vertical.TUNE_DEFAULT``) resolves
to ``auto`` unless privacy noise, ``guard = off`` or the baselines' switches rule it out (then ``off``,
logged; an explicit ``auto`` there is refused).

The grid (:func:`tune_grid`), stated and small: the configured weights; VFL + head fusion (every
prototype weight — ``lam``, ``lam_passive``, ``lam_aligned``, ``lam_impute`` — 0: its encoders, top
model and head train as the ``vfl_head_fusion`` baseline's, and the prototypes are still computed and
released, so its passive parties serve their passive-only users by nearest prototype and the fusion
choice on validation users includes the baseline's own fusion, top model + head); the three pull
weights ``lam``, ``lam_passive``, ``lam_aligned`` all × 0.3; all × 3 (``lam_impute`` as configured).
The schedule is successive halving (Jamieson & Talwalkar, "Non-stochastic best arm identification and
hyperparameter optimization", AISTATS 2016; :func:`halving_schedule`): every trial runs ``e0`` epochs
from fresh models, the better half runs again for ``2·e0``, and so on while more than one is left, except
that the last rung runs the run's full ``epochs`` (at the defaults, 4 trials × 5 epochs, then 2 × 40).
The VFL + head fusion trial is never eliminated before the last rung: if the halving drops it, it is
added to the last rung's kept trials (:func:`last_rung_trials`) rather than put in the last kept place,
so the method's settings the halving kept still get their full-length run (one more full-length trial).
The last rung's trials train with the run's ``attack`` setting, exactly as the released run would, and
every party keeps each one's trained state (``reset`` with ``keep_as``: the next trial's reset keeps the
previous one, riding in that message). The released model is the best trial of the last rung: one more
``reset`` keeps the last trial and restores the winner's state at every party (``restore``; the kept
states are dropped), so nothing is retrained. Every trial starts from the same seeded initial weights
and minibatch orders, so the released model is the one a ``tune = off`` run of the winner's settings
trains (exactly ``tune = off``'s when the configured weights win).

Score (:func:`trial_score`): per population the label holder serves — aligned users, users only it
holds, users only passive party ``k`` holds — the accuracy on its **validation** users of what would be
served: for the guarded populations the better of the trial's predictor and the local-only baseline (the
guard trains it inside every trial too, at the trial's length), for passive-only users the passive
party's nearest-prototype classes (0 where the trial serves none: no valid prototype). A trial's score
is the mean over the populations; ties keep the earlier trial of the grid (the configured weights
first). Trials read validation users only: they run ``select_fusion`` and ``evaluate`` on split ``val``,
never ``test``.

What it guarantees, on validation users, **for every population it serves**: the released model is
at least as accurate as the full-length VFL + head fusion run (the baseline's trial at full length, from
the same seeded models, is in the last rung: ``tune["vfl_head_fusion"]`` records its accuracies) — the
released trial is the best-scored last-rung trial among those at least as accurate as that one on every
population (:func:`dominates`; the baseline's trial always qualifies, so a method trial that wins on
the mean but loses a population is not released: ``tune["below_vfl_head_fusion"]`` names those) —
and at least as accurate as the local-only baseline on each guarded population (aligned, active-only),
which the guard serves with the local-only baseline unless the trial's predictor wins beyond noise. Users
only a passive party holds have no label-holder baseline; VFL + head fusion serves them by nearest
prototype, and the released model does at least as well on validation. The choice between the method's
settings and VFL + head fusion is per run: a trial losing one population is not mixed with the baseline
for that population (that would keep two models at every party), it is passed over.

Cost, charged in the run's totals: ``round_trips["tuning"]`` holds every trial's round trips — per trial
one ``reset``, its training round trips (as many per epoch as the run's), one request of the passive
parties' validation features, one to select the fusion and the guard, one to evaluate on validation users
— and the restoring ``reset``, except the released model's training, counted once, under
``round_trips["training"]`` (it is the winner's last-rung trial). At the defaults the trials train 20 + 2
× 40 epochs (3 × 40 when VFL + head fusion is added), the released model among them, where the old
schedule trained 20 + 2 × 10 and then 40 for the released run. Each party holds up to 3 kept trained
states during the last rung (for a Flower node, in its ``context.state``). What a passive party sees per
trial is logged (:class:`PassiveView`): its settings (the reset), the gradients of the aligned minibatches
of each exchange, every prototype release, and the requests for its features of the validation users. The
trials reuse the same aligned users, so every trial adds to what the passive parties learn about their
labels: ``tune = auto`` refuses privacy noise (``protocol.vertical.PRIVACY_NOISE_KEYS``), since the
reported ε would not charge the trials; without noise a passive party's view is not ε-label-DP anyway
(``passive_view_epsilon = inf``), and the trials give it more of the same (at the defaults 2–3 full-length
runs' worth instead of one), plus the chosen setting (at most log2 of the grid size bits chosen by the
validation labels). The attack measurement covers the released run only.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from protocol.vertical import GUARDED_POPULATIONS, RESET_KEYS, VerticalStrategyConfig, unpack_batch

Payload = dict[str, Any]
SCALES = (0.3, 3.0)
"""Factors of the prototype weights the grid tries beside the configured ones."""
SCALED_KEYS = ("lam", "lam_passive", "lam_aligned")


def tune_grid(s: VerticalStrategyConfig) -> list[tuple[str, dict[str, Any]]]:
    """The trials as ``(name, settings)``, the configured weights first; settings hold the prototype
    weights (the epochs and the attack switch are added per rung)."""
    configured = {key: float(getattr(s, key)) for key in (*SCALED_KEYS, "lam_impute")}
    grid = [("configured", configured), ("vfl_head_fusion", dict.fromkeys(configured, 0.0))]
    grid += [(f"weights_x{f:g}", {**configured, **{key: f * configured[key] for key in SCALED_KEYS}})
             for f in SCALES]
    return grid


def first_rung_epochs(s: VerticalStrategyConfig) -> int:
    """``max(ceil(tune_fraction × epochs), warmup_epochs + 1)``, at most ``epochs``: every trial has at
    least one epoch of prototype losses."""
    return min(s.epochs, max(math.ceil(s.tune_fraction * s.epochs), s.warmup_epochs + 1))


def halving_schedule(n_trials: int, first_epochs: int, epochs: int) -> list[tuple[int, int]]:
    """Successive halving: ``(trials kept, epochs)`` per rung, ``n`` trials at ``e0`` epochs, then
    ``ceil(n/2)`` at ``2·e0`` … while more than one trial is left; the last rung runs the run's ``epochs``
    (a rung that would reach them is the last one).

    Raises
    ------
    ValueError
        If ``n_trials`` or ``first_epochs`` is below 1 or ``first_epochs`` exceeds ``epochs``.
    """
    for key, value in (("n_trials", n_trials), ("first_epochs", first_epochs)):
        if value < 1:
            raise ValueError(f"halving_schedule needs {key} >= 1, got {value!r}")
    if first_epochs > epochs:
        raise ValueError(f"halving_schedule needs first_epochs <= epochs, got {first_epochs!r} > {epochs!r}")
    out, kept, length = [], n_trials, first_epochs
    while kept > 1 and length < epochs:
        out.append((kept, length))
        kept, length = math.ceil(kept / 2), 2 * length
    if kept == 1 and out:  # the halving ended: its last rung is the full-length one
        out[-1] = (out[-1][0], epochs)
    else:  # the next rung reaches the run's epochs (or no rung was run)
        out.append((kept, epochs))
    return out


def served_validation(val: Mapping[str, float | None], guard: Mapping[str, Mapping[str, Any]] | None
                      ) -> dict[str, float]:
    """Per population, the validation accuracy of what would be served: with the guard's record, that of
    the predictor it chose (the method's or the local-only baseline's) on its populations; 0 where nothing
    serves."""
    out = {name: 0.0 if acc is None else float(acc) for name, acc in val.items()}
    for population in GUARDED_POPULATIONS if guard else ():
        record = guard[population]
        out[population] = float(record["local_val" if record["chosen"] == "local" else "method_val"])
    return out


def trial_score(served: Mapping[str, float]) -> float:
    """The mean over the populations of the served validation accuracies."""
    return sum(served.values()) / len(served)


class PassiveView:
    """A :class:`strategies.vertical_prototype.PartyLink` wrapper counting, per passive party, what it
    receives and sends: ``resets`` (settings received), ``feature_batches`` (features of aligned
    minibatches sent), ``gradient_batches`` (gradients of aligned minibatches received),
    ``snapshots`` (features of all aligned users sent for a prototype release), ``prototype_releases``
    (prototype sets received) and ``validation_requests`` (features of the validation users sent)."""

    KEYS = ("resets", "feature_batches", "gradient_batches", "snapshots", "prototype_releases",
            "validation_requests")

    def __init__(self, link: Any, passives: list[str]) -> None:
        self._link = link
        self.parties = link.parties
        self.counts = {name: dict.fromkeys(self.KEYS, 0) for name in passives}

    def request(self, calls: Mapping[str, tuple[str, Payload]]) -> dict[str, Payload]:
        for name, (op, payload) in calls.items():
            for sub_op, sub in unpack_batch(payload) if op == "batch" else [(op, payload)]:
                if sub_op in ("predict", "evaluate") and sub.get("split") != "val":
                    raise RuntimeError(f"a tuning trial asked {name} about {sub.get('split')!r} users: "
                                       "trials read validation users only")
                if name in self.counts:
                    self._count(self.counts[name], sub_op, sub)
        return self._link.request(calls)

    @staticmethod
    def _count(counts: dict[str, int], op: str, payload: Payload) -> None:
        if op == "reset":
            counts["resets"] += 1
        elif op == "step":
            counts["feature_batches"] += len(payload.get("positions", []))
            counts["gradient_batches"] += len(payload.get("grad_positions", []))
        elif op == "snapshot":
            counts["snapshots"] += 1
        elif op == "receive":
            counts["prototype_releases"] += 1
        elif op == "predict":
            counts["validation_requests"] += 1


Trial = Callable[[dict[str, Any], int | None], dict[str, Any]]
"""``trial(settings, keep_as)`` runs one trial from fresh models with the given
:data:`protocol.vertical.RESET_KEYS` settings, its ``reset`` first keeping the previous trial's trained
state at every party under the log index ``keep_as`` (``None``: not kept); returns ``val`` (accuracy per
population), ``guard`` (the guard's record or ``None``), ``round_trips``, ``passive_view``
(:class:`PassiveView` counts) and ``prototype_releases``."""
BASELINE = "vfl_head_fusion"
"""The grid entry that trains as the VFL + head fusion baseline; it always reaches the last rung."""


def last_rung_trials(ranked: list[int], kept: int, baseline: int) -> list[int]:
    """The grid indices the last rung runs: the ``kept`` best of ``ranked`` (best first), then
    ``baseline`` if the halving dropped it — added rather than put in the last kept place, so the halving's
    choice of the method's settings stands and the baseline is still a candidate at full length."""
    return ranked[:kept] + ([baseline] if baseline not in ranked[:kept] else [])


def run_tuning(s: VerticalStrategyConfig, trial: Trial) -> dict[str, Any]:
    """Successive halving over :func:`tune_grid` with ``trial``; the ``tune`` record of the results:
    ``grid``, ``schedule`` (trials kept, epochs per rung), every trial's log (``rung``, ``name``,
    ``settings``, ``epochs``, ``round_trips``, ``val``, ``guard``, ``served_val``, ``score``,
    ``passive_view``, ``prototype_releases``), ``chosen`` (its name) and ``settings`` (its full-length
    :data:`protocol.vertical.RESET_KEYS` settings: the released model's), ``released`` (the last-rung
    trial released: ``name``, ``trial``, its index in the log, and its ``round_trips``),
    ``vfl_head_fusion`` (the full-length baseline trial: ``val``, ``served_val``, ``score``,
    ``round_trips``), ``below_vfl_head_fusion`` (last-rung trials passed over: below it on a population),
    the trials' ``round_trips``. The released trial is the best-scored last-rung trial that
    :func:`dominates` the baseline's.

    The last rung runs the run's ``epochs`` with its ``attack`` setting, so each of its trials trains
    exactly as the released run would, and each one's state is kept at the parties (the next trial's
    ``reset`` keeps it; the caller keeps the last one) for the winner's ``restore``."""
    grid = tune_grid(s)
    names = [name for name, _ in grid]
    schedule = halving_schedule(len(grid), first_rung_epochs(s), s.epochs)
    ranked = list(range(len(grid)))
    log: list[dict[str, Any]] = []
    for rung, (kept, epochs) in enumerate(schedule):
        last = rung == len(schedule) - 1
        scores = {}
        for i in last_rung_trials(ranked, kept, names.index(BASELINE)) if last else ranked[:kept]:
            name, weights = grid[i]
            settings = {**weights, "epochs": epochs, "attack": s.attack if last else False}
            keep_as = len(log) - 1 if log and log[-1]["rung"] == rung and last else None
            done = trial(settings, keep_as)
            served = served_validation(done["val"], done.get("guard"))
            scores[i] = trial_score(served)
            log.append({"rung": rung, "name": name, "settings": settings, "epochs": epochs,
                        "round_trips": done["round_trips"], "val": done["val"], "guard": done.get("guard"),
                        "served_val": served, "score": scores[i], "passive_view": done["passive_view"],
                        "prototype_releases": done["prototype_releases"]})
        ranked = sorted(scores, key=lambda i: (-scores[i], i))  # ties: the earlier in the grid
    last_trials = {t["name"]: k for k, t in enumerate(log) if t["rung"] == len(schedule) - 1}
    baseline = log[last_trials[BASELINE]]
    eligible = [i for i in ranked
                if dominates(log[last_trials[names[i]]]["served_val"], baseline["served_val"])]
    name, weights = grid[eligible[0]]
    assert set(weights) | {"epochs", "attack"} == set(RESET_KEYS)
    return {"grid": [{"name": n, **w} for n, w in grid], "schedule": [list(r) for r in schedule],
            "criterion": "mean over populations of the served validation accuracy, among the last-rung "
                         "trials at least as accurate as the VFL + head fusion trial on every population",
            "trials": log, "chosen": name,
            f"below_{BASELINE}": [names[i] for i in ranked if i not in eligible],
            "settings": {**weights, "epochs": s.epochs, "attack": s.attack},
            "released": {"name": name, "trial": last_trials[name],
                         "round_trips": log[last_trials[name]]["round_trips"]},
            BASELINE: {key: baseline[key] for key in ("val", "served_val", "score", "round_trips")},
            "round_trips": sum(t["round_trips"] for t in log)}


def dominates(served: Mapping[str, float], baseline: Mapping[str, float]) -> bool:
    """Whether a trial's served validation accuracy is at least the VFL + head fusion trial's on every
    population (the baseline trial dominates itself)."""
    return all(served[population] >= baseline[population] for population in baseline)


def versus_baseline(released: Mapping[str, float], baseline: Mapping[str, float]) -> dict[str, Any]:
    """Per population, the served validation accuracy of the released run and of the full-length VFL +
    head fusion trial, and whether the released one is at least as high (``at_least``)."""
    return {population: {"released": released[population], BASELINE: baseline[population],
                         "at_least": released[population] >= baseline[population]}
            for population in released}
