"""Shared test setup."""

import torch

# Tiny models on a 2-core machine: one intra-op thread avoids oversubscription when other
# processes (Ray workers, other tests) share the cores.
torch.set_num_threads(1)
