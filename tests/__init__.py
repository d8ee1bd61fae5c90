"""Test suite (a package so that ``python -m tests.benchmarks`` works)."""
