"""A real `flowtime serve` subprocess for integration tests and benchmarks.

`ServerProcess(data_dir)` starts `python -m compat_api.cli serve` on a free loopback port with the
given data folder, waits (bounded polling) until `/readyz` answers 200, and can `kill()` it with
SIGKILL (a crash), `stop()` it with SIGTERM, or `restart()` it on the same data folder (and the same
port when it is still free). Used as a context manager it is always torn down, even when a test
fails. Server output goes to `<data_dir>/../server-<n>.log` so a failing test can show it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ServerError(RuntimeError):
    pass


class ServerProcess:
    """One `flowtime serve` child process at a time, on a fixed data folder."""

    def __init__(
        self,
        data_dir: Path,
        *,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
        ready_timeout_s: float = 30.0,
        log_level: str = "warning",
    ) -> None:
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = Path(log_dir) if log_dir is not None else self.data_dir.parent
        self.extra_env = dict(env or {})
        self.ready_timeout_s = ready_timeout_s
        self.log_level = log_level
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.log_paths: list[Path] = []

    # -- addresses ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ServerError("the server is not running")
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the server and wait until /readyz is 200 (bounded); raises ServerError otherwise."""
        if self.running():
            raise ServerError("already running")
        for attempt in range(3):
            self._spawn()
            try:
                self._wait_ready()
                return
            except ServerError:
                exited = self.proc is not None and self.proc.poll() is not None
                self.kill()
                if not exited or attempt == 2:
                    raise
                self.port = free_port()  # the old port was taken meanwhile: move on
        raise ServerError("unreachable")  # pragma: no cover

    def _spawn(self) -> None:
        self.starts += 1
        log_path = self.log_dir / f"server-{self.starts}.log"
        self.log_paths.append(log_path)
        env = {**os.environ, **self.extra_env}
        cmd = [
            sys.executable,
            "-m",
            "compat_api.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--log-level",
            self.log_level,
        ]
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        with httpx.Client(timeout=1.0) as client:
            while True:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise ServerError(f"server exited with {self.proc.returncode} during start:\n{self.log_tail()}")
                try:
                    if client.get(f"{self.base_url}/readyz").status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise ServerError(f"server not ready after {self.ready_timeout_s}s:\n{self.log_tail()}")
                time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL (a crash): nothing is flushed, nothing is drained."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM and wait; SIGKILL if it does not exit in time. Returns the exit code."""
        if self.proc is None:
            return None
        code: int | None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        code = self.proc.returncode
        self.proc = None
        return code

    def restart(self, *, crash: bool = True) -> None:
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log_paths:
            return ""
        try:
            return self.log_paths[-1].read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.kill()


__all__ = ["ServerError", "ServerProcess", "free_port"]
