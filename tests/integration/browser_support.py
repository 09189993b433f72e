"""Driving a real headless Chromium for the dashboard tests (issue 7, issue 15).

Debian's `chromium` runs headless (installed by `.ci/run` when missing; tests skip, saying so, only
when no chromium binary exists) with a fresh profile, and is driven over the DevTools protocol with
`websockets`: `Cdp.eval` runs `Runtime.evaluate`, `Cdp.screenshot` writes a PNG. `Page` adds the
waits the tests share (`until`: poll an expression until it is truthy, bounded) and `shoot` keeps
screenshots under `test-artifacts/screenshots/` (ignored by git, kept by CI as artifacts).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
from websockets.asyncio.client import ClientConnection, connect

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
TIMEOUT_S = 30.0
T = TypeVar("T")


def chromium_binary() -> str | None:
    for path in CHROMIUM_PATHS:
        if os.access(path, os.X_OK):
            return path
    return shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def poll(check: Callable[[], T | None], what: str, timeout_s: float = TIMEOUT_S, every_s: float = 0.05) -> T:
    """Call `check` until it returns something other than None/False (bounded)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(every_s)


async def apoll(
    check: Callable[[], Awaitable[T | None]],
    what: str,
    last: Callable[[], Any] = lambda: None,
    timeout_s: float = TIMEOUT_S,
) -> T:
    """`poll` for coroutines; `last()` describes what was seen, for the failure message."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = await check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last seen: {last()}")
        await asyncio.sleep(0.1)


# -- processes --------------------------------------------------------------------------------------
@contextmanager
def running(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """A child process with its output in `log_path`; SIGTERM then SIGKILL (bounded) on exit."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def demo_run_id(base: str, proc: subprocess.Popen[bytes], log_path: Path) -> str:
    def live_run() -> str | None:
        if proc.poll() is not None:
            raise AssertionError(f"flowtime demo exited {proc.returncode}:\n{log_path.read_text(errors='replace')}")
        try:
            r = httpx.get(f"{base}/v1/runs", timeout=2.0)
        except httpx.HTTPError:
            return None
        if r.status_code != 200:
            return None
        body = r.json()
        runs = body if isinstance(body, list) else body.get("runs") or body.get("items") or []
        ids = [
            str(x.get("runId")) for x in runs if x.get("mode") == "live" and str(x.get("runId", "")).startswith("demo-")
        ]
        return ids[0] if ids else None

    return poll(live_run, "the demo's live run", timeout_s=60.0)


# -- DevTools protocol ------------------------------------------------------------------------------
class Cdp:
    """A minimal DevTools client on one page target: commands by id, events ignored."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = orjson.loads(raw)
            fut = self.waiting.pop(msg.get("id", -1), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        i = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[i] = fut
        await self.ws.send(orjson.dumps({"id": i, "method": method, "params": params}).decode())
        async with asyncio.timeout(TIMEOUT_S):
            msg = await fut
        if "error" in msg:
            raise AssertionError(f"{method}: {msg['error']}")
        result: dict[str, Any] = msg.get("result", {})
        return result

    async def eval(self, expression: str) -> Any:
        r = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def close(self) -> None:
        self.reader.cancel()
        with suppress(asyncio.CancelledError, Exception):
            await self.reader
        await self.ws.close()


@asynccontextmanager
async def browser_page(binary: str, profile: Path, log_path: Path) -> AsyncIterator[Cdp]:
    port = free_port()
    cmd = [
        binary,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
        f"--remote-debugging-port={port}",
        "about:blank",
    ]
    with running(cmd, log_path) as proc:

        def page_ws_url() -> str | None:
            if proc.poll() is not None:
                raise AssertionError(f"chromium exited {proc.returncode}:\n{log_path.read_text(errors='replace')}")
            try:
                targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=2.0).json()
            except (httpx.HTTPError, ValueError):
                return None
            pages = [t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page"]
            return pages[0] if pages else None

        url = await asyncio.to_thread(poll, page_ws_url, "chromium's DevTools endpoint")
        async with connect(url, max_size=64 * 1024 * 1024) as ws:
            cdp = Cdp(ws)
            try:
                yield cdp
            finally:
                await cdp.close()


class Page:
    """One page of the dashboard: navigate, evaluate, wait for a condition, take screenshots."""

    def __init__(self, cdp: Cdp, out: Path) -> None:
        self.cdp = cdp
        self.out = out
        self.last: Any = None

    async def open(self, url: str, before_load: str | None = None) -> None:
        await self.cdp.send("Page.enable")
        await self.cdp.send("Runtime.enable")
        if before_load:
            await self.cdp.send("Page.addScriptToEvaluateOnNewDocument", source=before_load)
        await self.cdp.send("Page.navigate", url=url)

    async def eval(self, expression: str) -> Any:
        return await self.cdp.eval(expression)

    async def until(self, expression: str, what: str, timeout_s: float = TIMEOUT_S) -> Any:
        """Evaluate `expression` until its value is truthy (bounded); that value."""

        async def check() -> Any:
            guarded = f"(() => {{ try {{ return ({expression}); }} catch (e) {{ return null; }} }})()"
            self.last = await self.cdp.eval(guarded)
            return self.last

        return await apoll(check, what, lambda: self.last, timeout_s=timeout_s)

    async def shoot(self, name: str) -> bytes:
        """A PNG of the page, kept in the test's folder and under test-artifacts/screenshots/."""
        shot = await self.cdp.send("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        (self.out / f"{name}.png").write_bytes(png)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / f"{name}.png").write_bytes(png)
        return png


@asynccontextmanager
async def dashboard(binary: str, out: Path) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own throw-away profile) with one page."""
    import tempfile

    # chromium helper processes may still write to the profile while it is removed: ignore that
    with tempfile.TemporaryDirectory(prefix="flowtime-chromium-", ignore_cleanup_errors=True) as profile:
        async with browser_page(binary, Path(profile), out / "chromium.log") as cdp:
            yield Page(cdp, out)


def screenshot_name(name: str) -> str:
    return name.replace("/", "-")


__all__ = [
    "ROOT",
    "SCREENSHOTS",
    "TIMEOUT_S",
    "Cdp",
    "Page",
    "apoll",
    "browser_page",
    "chromium_binary",
    "dashboard",
    "demo_run_id",
    "free_port",
    "poll",
    "running",
]
