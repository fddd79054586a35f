"""Project-wide pytest options and fixtures.

`--update-golden` rewrites the golden files under tests/golden/ instead of comparing against them: review the
resulting `git diff` like any other change.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

import pytest

GOLDEN_DIR = Path(__file__).parent / "golden"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden", action="store_true", default=False, help="rewrite tests/golden/* from the current output"
    )


@dataclass(frozen=True)
class Golden:
    """Compares text with tests/golden/<name>, or rewrites that file under --update-golden."""

    directory: Path
    update: bool

    def path(self, name: str) -> Path:
        return self.directory / name

    def check(self, name: str, actual: str) -> None:
        __tracebackhide__ = True  # a mismatch is reported at the test's line
        path = self.path(name)
        if self.update:
            path.write_text(actual)
            return
        if not path.exists():
            pytest.fail(f"{path} does not exist; create it with --update-golden")
        expected = path.read_text()
        if actual != expected:
            diff = difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"{path} (golden)",
                f"{name} (actual)",
            )
            pytest.fail(f"output differs from {path} (rerun with --update-golden to accept):\n{''.join(diff)}")


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    return Golden(GOLDEN_DIR, bool(request.config.getoption("--update-golden")))
