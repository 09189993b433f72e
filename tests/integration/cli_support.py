"""Helpers for the CLI integration tests: a `flowtime serve` subprocess, a live microservices run,
and a line reader for a subprocess's output with bounded waits."""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import httpx

from compat_api.templates.catalog import install_template_bundle, instantiate

FLOWTIME = [sys.executable, "-m", "compat_api.cli"]
ENV = {**{k: v for k, v in os.environ.items() if not k.startswith("FLOWTIME_")}, "PYTHONUNBUFFERED": "1"}


def flowtime(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FLOWTIME, *args], capture_output=True, text=True, timeout=timeout, env=ENV)


def popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*FLOWTIME, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


class Service:
    """`flowtime serve` on a fixed port and data folder; stop() and start() again to restart it."""

    def __init__(self, port: int, data_dir: Path) -> None:
        self.port, self.data_dir = port, data_dir
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout_s: float = 30.0) -> None:
        args = ["serve", "--port", str(self.port), "--data-dir", str(self.data_dir), "--log-level", "warning"]
        proc = subprocess.Popen(
            [*FLOWTIME, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, text=True
        )
        self.proc = proc
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"flowtime serve did not become ready (exit {proc.poll()})")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


def create_live_run(svc: Service, run_id: str, bins: int = 24) -> Path:
    """A live run of the microservices template in telemetry mode; returns the bundle folder."""
    bundle = install_template_bundle("microservices", svc.data_dir / "bundles")
    model, _, _ = instantiate(
        "microservices", {"bins": bins, "telemetryDir": "bundles/microservices"}, data_dir=svc.data_dir
    )
    body = {"mode": "live", "model": model, "options": {"runId": run_id}}
    resp = httpx.post(f"{svc.url}/v1/runs", json=body, timeout=30)
    assert resp.status_code == 202, resp.text
    return bundle


class Lines:
    """Collects a text stream's lines in a thread; `wait_for` polls them with a deadline."""

    def __init__(self, stream: IO[str] | None) -> None:
        assert stream is not None
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, pred: Callable[[str], bool], timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._q.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"no matching line in {timeout_s}s; got {self.lines[-5:]}") from None
            if line is None:
                raise EOFError(f"stream ended without a matching line; got {self.lines[-5:]}")
            self.lines.append(line)
            if pred(line):
                return line

    def rest(self, timeout_s: float = 30.0) -> list[str]:
        """Every line until the end of the stream."""
        with contextlib.suppress(EOFError):
            self.wait_for(lambda _: False, timeout_s)
        return self.lines


def seqd(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in events if e.get("type") in ("run_update", "warning_update", "status") and "v" in e]
