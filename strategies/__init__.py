"""flwr-privkit: strategies."""
