"""flwr-privkit: clients."""
