"""Benchmarks and the engine-against-reference equivalence check (see README.md here)."""
