"""Benchmarks for stockq (run from the repo root, e.g. ``python -m bench.bench_core``)."""
