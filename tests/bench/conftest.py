"""Benchmarks are not tests: pytest collects nothing here, even when pointed at this directory explicitly.

Run them with `.venv/bin/python -m tests.bench` (docs/benchmarks.md)."""

collect_ignore_glob = ["*.py"]
