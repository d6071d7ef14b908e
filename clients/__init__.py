"""flwr-privkit: the party side — what the nodes run.

One subpackage per method, beside the modules they share:

- :mod:`clients.pate`: ensemble-label distillation (teacher and student nodes);
- :mod:`clients.psi`: private set intersection (Paillier FNP and ECDH), the vertical parties' alignment;
- :mod:`clients.vertical`: the vertical prototype exchange (active and passive parties);
- shared: :mod:`clients.data` (bundled datasets and the PATE split), :mod:`clients.data_cache` (prepared
  once per machine), :mod:`clients.encoders`, :mod:`clients.training`, :mod:`clients.node_output` (where a
  node writes), :mod:`clients.progress_log` (how far a node's long step has come).

The shared modules import no method; a method imports no other, except :mod:`clients.vertical`, which
aligns its parties with :mod:`clients.psi` (``tests/test_architecture.py``, ``docs/architecture.md``).
"""
