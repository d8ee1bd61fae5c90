"""Benchmarks: figures about the probe, printed, never asserted.

Run them all with ``.venv/bin/python -m tests.benchmarks`` (``--quick`` for a smoke run).  Files
are named ``bench_*.py`` so that pytest does not collect them.
"""
