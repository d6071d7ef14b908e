"""The secure-aggregation benchmark's timing rows run end to end and carry the documented fields."""

from __future__ import annotations

import math
import warnings

from benchmarks import pate_secagg
from strategies.rdp_analysis import PrivacyWarning


def test_timing_rows_time_both_modes_on_five_teacher_nodes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrivacyWarning)
        [row] = pate_secagg.timing_rows((10,), batches=1)
    assert (row["method"], row["num_teachers"], row["teacher_nodes"]) == ("secagg_overhead", 10, 5)
    for key in ("central_s_per_batch", "secagg_s_per_batch", "secagg_setup_s"):
        assert math.isfinite(row[key]) and row[key] > 0, key
    assert row["overhead_s_per_batch"] == row["secagg_s_per_batch"] - row["central_s_per_batch"]
