"""Tests of the benchmarks (their fast paths)."""
