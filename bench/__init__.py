"""Jetbridge benchmarks: every scenario with its baselines measured in the same run (see bench/README.md)."""
