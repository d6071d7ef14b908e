"""The protection frontier's attack advantages, Pareto set and target check (``benchmarks.vertical_frontier``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.vertical_frontier import advantages, frontier, plot


def _row(setting: str, accuracy: float, direction: float, **attacks: float) -> dict:
    return {"dataset": "digits", "aligned_fraction": 0.1, "setting": setting, "accuracy": accuracy,
            "attack_exact": 0.15, "attack_nearest": 0.15, "attack_grad_norm": 0.48,
            "attack_grad_direction": direction, "attack_grad_direction_chance": 0.14,
            "attack_fwd_cluster": 0.16, "attack_fwd_cluster_best": 0.30, "attack_fwd_cluster_best_chance": 0.23,
            **attacks}


def test_advantages_pareto_and_target(tmp_path: Path) -> None:
    rows = [_row("none", 0.95, 0.95), _row("a", 0.94, 0.17), _row("b", 0.90, 0.17), _row("c", 0.92, 0.10)]
    assert advantages(rows[1]) == pytest.approx({"exact": 1.0, "nearest": 1.0, "grad_norm": 2.0,
                                                 "grad_direction": 3.0, "fwd_cluster": 2.0,
                                                 "fwd_cluster_best": 7.0})
    points = frontier(rows)
    assert [p["worst"] for p in points] == pytest.approx([81.0, 7.0, 7.0, 7.0])
    assert [p["pareto"] for p in points] == [True, True, False, False]  # b and c: a is as safe, more accurate
    assert not any(p["target"] for p in points)  # the best-mapping bound is 7 points over its chance
    points = frontier([rows[0], _row("a", 0.94, 0.17, attack_fwd_cluster_best=0.27)])
    assert points[1]["worst"] == pytest.approx(4.0) and points[1]["target"]
    assert advantages({"attack_exact": None}) == {}  # results older than an attack: not counted
    assert plot(points, tmp_path / "frontier.png").stat().st_size > 0
