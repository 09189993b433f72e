"""Shared test configuration: Hypothesis without wall-clock deadlines (CI machines are shared and
slow; timing is measured by bench/, never asserted in tests)."""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

# Starlette's TestClient sends `Host: testserver`; with auth off the service answers loopback names only
# (docs/security.md#browsers), so the test process allows that one name too. Tests of the browser guard
# set `allowed_hosts` themselves.
os.environ.setdefault("FLOWTIME_ALLOWED_HOSTS", "testserver")

settings.register_profile("flowtime", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("flowtime")


@pytest.fixture
def faulty_fs() -> Any:
    """An `FsOps` for the file stores that fails the calls a test arms (`tests/fault_fs.py`)."""
    from tests.fault_fs import FaultyFs

    return FaultyFs()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Report how many cases each fuzz target ran (issue 12: fuzzing in CI reports its case counts)."""
    from tests.fuzz_counts import CASES

    if CASES:
        terminalreporter.write_sep("-", "fuzz cases")
        for target, n in sorted(CASES.items()):
            terminalreporter.write_line(f"{target}: {n}")
