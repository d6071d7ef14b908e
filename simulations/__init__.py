"""flwr-privkit: simulations."""
