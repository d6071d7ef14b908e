"""Rényi-DP accounting for PATE vote fusion, and a persisted privacy ledger: the public façade.

The implementation is split in layers, kept apart on purpose; this module re-exports their public
names so that ``from strategies.accounting import ...`` keeps working:

* :mod:`strategies.rdp_analysis` (pure numpy/scipy, vectorised over queries): validation, the
  per-query RDP of GNMax and of the Confident-GNMax threshold check, data-independent and
  data-dependent ([P18] Theorem 6, Propositions 7 and 8);
* :mod:`strategies.rdp_lnmax`: the same for LNMax ([P17] Theorem 3);
* :mod:`strategies.rdp_conversion`: RDP → (ε, δ) ([M17] Proposition 3);
* :mod:`strategies.smooth_sensitivity`: the smooth-sensitivity release of a data-dependent ε
  ([P18] Section 4.3 and Appendix B);
* :mod:`strategies.privacy_ledger`: :class:`PrivacyLedger`, bookkeeping only. It charges batches of
  vote histograms, stops before the budget would be exceeded, keeps a history and persists it
  atomically as JSON (:mod:`strategies.ledger_store`).

References
----------
* [P18] N. Papernot, S. Song, I. Mironov, A. Raghunathan, K. Talwar, Ú. Erlingsson. "Scalable
  Private Learning with PATE." ICLR 2018, arXiv:1802.08908.
* [P17] N. Papernot, M. Abadi, Ú. Erlingsson, I. Goodfellow, K. Talwar. "Semi-supervised Knowledge
  Transfer for Deep Learning from Private Training Data." ICLR 2017, arXiv:1610.05755.
* [M17] I. Mironov. "Rényi Differential Privacy." CSF 2017, arXiv:1702.07476.

Caveat (stated in [P18]): a data-dependent ε depends on the teachers' votes and is therefore not
itself differentially private. Report the data-independent ε beside it, or release the
data-dependent one through the smooth-sensitivity mechanism.
"""

from __future__ import annotations

import os  # noqa: F401  (tests patch ``accounting.os``; it is the process-wide module)

from strategies.privacy_ledger import BudgetExhaustedError, ChargeResult, LedgerIntegrityError, PrivacyLedger
from strategies.rdp_analysis import (
    DEFAULT_ORDERS,
    PrivacyWarning,
    log_pr_answered,
    rdp_confident_gnmax_expected,
    rdp_gnmax_data_dependent,
    rdp_gnmax_data_independent,
    rdp_threshold,
    rdp_threshold_data_independent,
    validate_votes,
)
from strategies.rdp_conversion import rdp_to_epsilon
from strategies.rdp_lnmax import (
    rdp_lnmax_data_dependent,
    rdp_lnmax_data_independent,
    rdp_lnmax_data_independent_exact,
)
from strategies.smooth_sensitivity import (
    SmoothSensitivityRelease,
    draw_released_epsilon,
    smooth_sensitivity_release,
)

__all__ = [
    "DEFAULT_ORDERS",
    "BudgetExhaustedError",
    "ChargeResult",
    "LedgerIntegrityError",
    "PrivacyLedger",
    "PrivacyWarning",
    "SmoothSensitivityRelease",
    "draw_released_epsilon",
    "log_pr_answered",
    "rdp_confident_gnmax_expected",
    "rdp_gnmax_data_dependent",
    "rdp_gnmax_data_independent",
    "rdp_lnmax_data_dependent",
    "rdp_lnmax_data_independent",
    "rdp_lnmax_data_independent_exact",
    "rdp_threshold",
    "rdp_threshold_data_independent",
    "rdp_to_epsilon",
    "smooth_sensitivity_release",
    "validate_votes",
]
