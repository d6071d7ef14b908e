"""Benchmark: noise at the server vs at the teachers under secure aggregation vs local randomised response.

Run through ``python -m benchmarks.pate --secagg`` (rows in the same JSON schema as the rest of
``benchmarks/pate.py``; ``method`` names the mode). Every run is a real :class:`EnsembleDistillation`
over the Flower Message API, delivered in process (:class:`LocalGrid`: the ClientApp handles each
``Message`` directly, no network), with a supervised student:

- ``gnmax`` (noise at the server) with the budget on the data-dependent ε, and with it on the
  data-independent ε (the only accounting the distributed mode can use);
- ``gnmax_distributed_secagg``: each of the 5 teacher nodes adds ``N(0, σ²/5)`` and the votes are summed
  under secure aggregation (``strategies.distributed_noise``), data-independent budget;
- ``local_rr``: each teacher's vote through k-ary randomised response (``strategies.local_rr``).

σ (ε0 for local RR) is chosen per method on the student's validation split (mean over seeds): every
candidate gets a row, ``selected`` marks the choice (``*`` in the table). The second part times the
vote gathering per batch of 128 queries with 10, 50 and 250 teachers on 5 teacher nodes, noise at the
server vs under secure aggregation (the key setup is reported apart: it runs once per run).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.supercore.task_identity import TaskIdentity

from protocol.pate import DataSpec, ModelSpec, StudentSettings
from simulations.app import build_client_app
from simulations.pate_config import compose_config
from strategies.distributed_noise import SecureVoting
from strategies.ensemble_distillation import EnsembleDistillation
from strategies.fusion import GNMax
from strategies.local_rr import LocalRR
from strategies.pate_queries import QueryRider
from strategies.privacy_ledger import PrivacyLedger

DELTA = 1e-5
TEACHER_NODES = 5
SIGMAS = (2.0, 4.0, 8.0, 12.0)  # 0.1 to 0.6 of the 20 digits teachers
RR_EPSILONS = (0.2, 0.5, 1.0, 2.0)


class LocalGrid:
    """A Grid that hands each Message to the ClientApp in this process (one Context per node)."""

    def __init__(self, app: ClientApp, num_nodes: int) -> None:
        TaskIdentity.run_id, TaskIdentity.task_id, TaskIdentity.node_id = 1, 1, 0
        self.app = app
        self.contexts = {1000 + i: Context(run_id=1, node_id=1000 + i, state=RecordDict(), run_config={},
                                           node_config={"partition-id": i, "num-partitions": num_nodes})
                         for i in range(num_nodes)}

    def get_node_ids(self) -> list[int]:
        return list(self.contexts)

    def send_and_receive(self, messages: list[Message], *, timeout: float | None = None) -> list[Message]:
        replies = []
        for msg in messages:
            try:
                replies.append(self.app(msg, self.contexts[msg.metadata.dst_node_id]))
            except Exception as err:  # noqa: BLE001 - as Flower: a handler error becomes an error reply
                replies.append(Message(Error(code=2, reason=f"{type(err).__name__}: {err}"), reply_to=msg))
        return replies


def _run(data: DataSpec, teacher: ModelSpec, student: ModelSpec, mode: str, param: float, budget: float,
         max_queries: int | None = None) -> dict[str, Any]:
    """One PATE run in ``mode``; the report plus per-batch query-phase times."""
    budget_on = None  # the mechanism's first basis: data-independent for local RR and secagg
    if mode == "local_rr":
        mechanism: Any = LocalRR(epsilon=param)
    elif mode == "gnmax_distributed_secagg":
        mechanism = SecureVoting(GNMax(sigma2=param))
    else:
        mechanism = GNMax(sigma2=param)
        budget_on = mode.removeprefix("gnmax_budget_")
    ledger = PrivacyLedger.for_mechanism(mechanism, None, delta=DELTA, epsilon_budget=budget,
                                         budget_on=budget_on)
    strategy = _TimedStrategy(mechanism=mechanism, ledger=ledger, data=data, teacher_model=teacher,
                              student_model=student, query_batch_size=128, max_queries=max_queries,
                              student=StudentSettings(method="supervised", model_name=""),
                              pipeline_queries=False)  # batch_s times the votes alone, in every mode
    t0 = time.perf_counter()
    grid = LocalGrid(build_client_app(), TEACHER_NODES + 1)
    report = strategy.start(grid).report
    report["wall_s"] = time.perf_counter() - t0
    report["batch_s"] = strategy.gather_s
    return report


class _TimedStrategy(EnsembleDistillation):
    """Times each batch's vote gathering (teacher inference, messages and, in secagg mode, the protocol)."""

    gather_s: list[float]

    def _gather_votes(self, grid: Any, batch_x: np.ndarray, rider: QueryRider | None = None) -> np.ndarray:
        t0 = time.perf_counter()
        votes = super()._gather_votes(grid, batch_x, rider)
        self.gather_s = [*getattr(self, "gather_s", []), time.perf_counter() - t0]
        return votes


def accuracy_rows(seeds: list[int], quick: bool, budget: float = 8.0) -> list[dict[str, Any]]:
    """Accuracy and ε of the four modes on digits (20 teachers on 5 nodes) at ``budget``."""
    cfg = compose_config("dataset=digits")
    teacher, student = cfg.teacher, cfg.student_model
    if quick:
        teacher, student = replace(teacher, epochs=20), replace(student, epochs=20)
    modes = {"gnmax_budget_data_dependent": SIGMAS, "gnmax_budget_data_independent": SIGMAS,
             "gnmax_distributed_secagg": SIGMAS, "local_rr": RR_EPSILONS}
    rows = []
    for mode, params in modes.items():
        results = {p: [_run(replace(cfg.data, seed=s), teacher, student, mode, p, budget) for s in seeds]
                   for p in params}
        scores = {p: float(np.mean([r["student"]["validation_accuracy"] for r in rs]))
                  for p, rs in results.items()}
        best = max(scores, key=scores.get)
        method = "gnmax" if mode.startswith("gnmax_budget") else mode
        budget_on = "data_dependent" if mode == "gnmax_budget_data_dependent" else "data_independent"
        for param, chosen in results.items():  # every candidate's row; `selected` marks validation's choice
            rows.append({
                "dataset": "digits", "method": method, "student": "supervised", "budget": budget,
                "budget_on": budget_on, "sigma2": None if mode == "local_rr" else param,
                "rr_epsilon": param if mode == "local_rr" else None, "selected": param == best,
                "num_teachers": cfg.data.num_teachers, "teacher_nodes": TEACHER_NODES, "delta": DELTA,
                "seeds": seeds, "validation_accuracy": scores[param],
                **_mean(chosen, "accuracy", lambda r: r["student"]["test_accuracy"]),
                **_mean(chosen, "label_accuracy", lambda r: r["student"].get("fused_label_accuracy")),
                **_mean(chosen, "answered", lambda r: r["answered"]),
                **_mean(chosen, "epsilon_data_dependent", lambda r: r["epsilon_data_dependent"]),
                **_mean(chosen, "epsilon_data_independent", lambda r: r["epsilon_data_independent"]),
                **_mean(chosen, "epsilon_server_view", lambda r: r.get("epsilon_server_view")),
                **_mean(chosen, "wall_s", lambda r: r["wall_s"]),
            })
        print(f"[secagg] {mode}: chose {best} on validation {scores}", flush=True)
    return rows


def _mean(results: list[dict[str, Any]], name: str, get: Any) -> dict[str, Any]:
    values = [get(r) for r in results]
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not values:
        return {name: None}
    out: dict[str, Any] = {name: float(np.mean(values))}
    if name == "accuracy":
        out["accuracy_std"] = float(np.std(values))
    return out


def timing_rows(teacher_counts: tuple[int, ...] = (10, 50, 250), batches: int = 5) -> list[dict[str, Any]]:
    """Per-batch vote-gathering time (median of ``batches`` full batches after the first), noise at the
    server vs under secure aggregation, on 5 teacher nodes; the secure-aggregation setup is timed apart."""
    cfg = compose_config("dataset=digits")
    teacher = replace(cfg.teacher, epochs=1)  # only the time matters here
    rows = []
    for n in teacher_counts:
        data = replace(cfg.data, num_teachers=n, query_fraction=0.5)  # a pool of 898: 7 batches of 128
        per_mode = {}
        for mode in ("gnmax_budget_data_independent", "gnmax_distributed_secagg"):
            report = _run(data, teacher, replace(cfg.student_model, epochs=1), mode, 0.5 * n, 1e9,  # σ < n
                          max_queries=128 * (batches + 1))
            per_mode[mode] = {"setup": report.get("secagg_setup_s"),
                              "steady": float(np.median(report["batch_s"][1:batches + 1]))}
        central, secure = per_mode["gnmax_budget_data_independent"], per_mode["gnmax_distributed_secagg"]
        row = {"dataset": "digits", "method": "secagg_overhead", "num_teachers": n,
               "teacher_nodes": TEACHER_NODES, "query_batch_size": 128,
               "central_s_per_batch": central["steady"], "secagg_s_per_batch": secure["steady"],
               "overhead_s_per_batch": secure["steady"] - central["steady"],
               "secagg_setup_s": secure["setup"]}
        print(f"[secagg] {n} teachers: central {central['steady']:.3f} s/batch, secagg "
              f"{secure['steady']:.3f} s/batch, setup {secure['setup']:.3f} s", flush=True)
        rows.append(row)
    return rows


def print_table(rows: list[dict[str, Any]]) -> None:
    """The two tables: accuracy and ε per mode, then the time per batch."""
    def fmt(value: Any, spec: str = ".3f") -> str:
        return "-" if value is None else format(value, spec)

    print(f"{'method':<25} {'budget_on':<17} {'σ/ε0':>6} {'acc':>13} {'lbl_acc':>7} {'answered':>8} "
          f"{'eps_dd':>7} {'eps_di':>7} {'eps_srv':>7}")
    for r in (r for r in rows if r["method"] != "secagg_overhead"):
        param = r["sigma2"] if r["sigma2"] is not None else r["rr_epsilon"]
        print(f"{r['method']:<25} {r['budget_on']:<17} {param:>5g}{'*' if r['selected'] else ' '} "
              f"{fmt(r['accuracy']) + '±' + fmt(r.get('accuracy_std')):>13} {fmt(r['label_accuracy']):>7} "
              f"{fmt(r['answered'], '.0f'):>8} {fmt(r['epsilon_data_dependent']):>7} "
              f"{fmt(r['epsilon_data_independent']):>7} {fmt(r['epsilon_server_view']):>7}")
    print(f"\n{'teachers':>8} {'nodes':>5} {'central s/batch':>15} {'secagg s/batch':>14} {'overhead':>9} "
          f"{'setup s':>8}")
    for r in (r for r in rows if r["method"] == "secagg_overhead"):
        print(f"{r['num_teachers']:>8} {r['teacher_nodes']:>5} {r['central_s_per_batch']:>15.3f} "
              f"{r['secagg_s_per_batch']:>14.3f} {r['overhead_s_per_batch']:>9.3f} "
              f"{fmt(r['secagg_setup_s']):>8}")
