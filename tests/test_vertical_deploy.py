"""The pure part of ``benchmarks.vertical_deploy``: a deployment row's same-run floor fields."""

from __future__ import annotations

import pytest

from benchmarks.vertical_deploy import with_floor


def test_a_row_is_compared_with_its_round_trips_times_the_floor():
    row = {"epoch_mean_s": 30.0, "round_trips_per_epoch": 4.0}
    floor = {"median_s": 5.0, "round_trip_s": [4.0, 5.0, 6.0]}
    out = with_floor(row, floor, load=2.5)
    assert out["floor_median_s"] == 5.0 and out["floor"] is floor and out["floor_load_average_1min"] == 2.5
    assert out["ratio_to_round_trips_x_floor"] == pytest.approx(1.5)
    assert out["epoch_mean_s"] == 30.0 and "floor" not in row  # the row is copied, not changed
