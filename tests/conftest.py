"""Shared test setup."""

import torch

# Tiny models on a 2-core machine: one intra-op thread avoids oversubscription when other
# processes (Ray workers, other tests) share the cores.
torch.set_num_threads(1)


def pytest_configure(config: object) -> None:
    """Prepared datasets go to a cache folder of this test session, never the user's own cache
    (``clients.data_cache``); simulated nodes inherit it through the environment."""
    import os
    import tempfile

    from clients.data_cache import CACHE_DIR_ENV

    os.environ[CACHE_DIR_ENV] = tempfile.mkdtemp(prefix="flwr-privkit-test-cache-")
