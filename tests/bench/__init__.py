"""mnp's benchmark suite — never part of the pass/fail tests (tests/bench/conftest.py keeps pytest out).

    sudo .venv/bin/python -m tests.bench [--parts cni,policy,podstart,packet,scale] [--json FILE] [--no-docs]

See tests/bench/run.py and docs/benchmarks.md.
"""

__test__ = False
