"""Benchmarks (not tests): cold start, calls per operation, cleanup cost. See bench/README.md."""
