"""Benchmarks of the delivery engine (run ``python -m bench.run``; not part of the test suite)."""
