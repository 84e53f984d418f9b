"""Benchmarks (plain Python, absl flags, JSON output)."""
