"""Generators of test data with known ground truth (used by tests and benchmarks)."""
