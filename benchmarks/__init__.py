"""flwr-privkit: benchmarks."""
