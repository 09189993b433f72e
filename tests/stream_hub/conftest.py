"""A real uvicorn server on loopback for the stream tests that need one (`test_ws_limits_server.py`)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.loopback import start_uvicorn


@pytest.fixture
def loopback_server() -> Any:
    """The `start_uvicorn` context manager (test modules cannot import a conftest)."""
    return start_uvicorn
