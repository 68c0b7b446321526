"""Benchmarks, run by hand: ``python3 -m bench`` or ``bench/run`` (see bench/RESULTS.md)."""
