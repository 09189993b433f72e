"""Client commands of the `flowtime` CLI (SPEC §9): thin layers over the HTTP API and the run folders.

- `ingest RUN_ID --bundle DIR [--speed BINS_PER_S] [--close]`: replays a telemetry bundle into a live
  run, one NDJSON `POST /v1/runs/{id}/bins` per bin (bins without any value are skipped, so the run
  sees the gap), paced at `--speed` bins per second (unpaced when omitted), honouring 429
  `Retry-After`; a progress bar, then a summary.
- `Api`, `replay` and `bundle_frames` are shared with `flowtime demo`; the WebSocket tail is in
  `compat_api.cli.stream`, the commands over the data folder in `compat_api.cli.offline`.

Errors: a 4xx answer (unknown run, bad frame, bad bundle) is bad input (exit 2); a 5xx answer, an
unreachable server or a queue that stays full is a server error (exit 3).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from engine_live.errors import BadInputError, FlowTimeError, ServerError

DEFAULT_URL = "http://127.0.0.1:8080"
NDJSON = "application/x-ndjson"
Sleep = Callable[[float], Awaitable[None]]


def console() -> Console:
    """Rich's console; piped output gets a wide fixed width instead of 80 columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def api_error(resp: httpx.Response) -> FlowTimeError:
    """The FlowTimeError for an error answer: 4xx → bad input (exit 2), anything else → server (exit 3)."""
    try:
        body = resp.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    message = f"{resp.request.method} {resp.request.url.path}: {resp.status_code} " + str(
        body.get("message") or resp.reason_phrase
    )
    cls = BadInputError if 400 <= resp.status_code < 500 else ServerError
    return cls(message, code=str(body.get("error") or cls.code), status=resp.status_code)


class Api:
    """An httpx.AsyncClient for one service with its bearer token; transport errors → ServerError."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.AsyncClient(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    async def __aenter__(self) -> Api:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        """An HTTP request; ServerError when the service cannot be reached."""
        try:
            return await self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ServerError(f"cannot reach {self.url}: {type(exc).__name__}: {exc}") from None

    async def json(self, method: str, path: str, **kw: Any) -> Any:
        """The JSON answer of a request (None when empty); an error answer raises via `api_error`."""
        resp = await self.request(method, path, **kw)
        if resp.status_code >= 400:
            raise api_error(resp)
        return resp.json() if resp.content else None

    async def ingest(
        self, run_id: str, frames: list[dict[str, Any]], *, max_wait_s: float = 120.0, sleep: Sleep = asyncio.sleep
    ) -> tuple[dict[str, Any], int]:
        """POST one NDJSON request; on 429 wait `Retry-After` and send it again. → (answer, retries)."""
        body = b"".join(orjson.dumps(f) + b"\n" for f in frames)
        waited, retries = 0.0, 0
        while True:
            resp = await self.request("POST", f"/v1/runs/{run_id}/bins", content=body, headers={"Content-Type": NDJSON})
            if resp.status_code != 429:
                break
            delay = retry_after(resp.headers.get("Retry-After"))
            if waited + delay > max_wait_s:
                raise ServerError(f"the ingest queue of {self.url} stayed full for {waited:.0f} s")
            retries += 1
            waited += delay
            await sleep(delay)
        if resp.status_code >= 400:
            raise api_error(resp)
        answer: dict[str, Any] = resp.json()
        return answer, retries


def retry_after(header: str | None, default: float = 1.0) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds; anything else → default)."""
    try:
        return max(0.0, float(header)) if header is not None else default
    except ValueError:
        return default


async def bundle_frames(api: Api, run_id: str, bundle_dir: Path) -> list[list[dict[str, Any]]]:
    """The run's model (`GET /v1/runs/{id}/model`) bound to the bundle: per bin, its ingest frames."""
    from engine_live.model.build import build_model
    from engine_live.model.document import load_model
    from ingestion.bundle import iter_frames, load_bundle

    if not (bundle_dir / "manifest.json").is_file():
        raise BadInputError(f"{bundle_dir}: not a telemetry bundle (no manifest.json)")
    resp = await api.request("GET", f"/v1/runs/{run_id}/model")
    if resp.status_code >= 400:
        raise api_error(resp)
    graph = build_model(load_model(resp.text, base_dir=bundle_dir, live=True))
    return list(iter_frames(load_bundle(bundle_dir), graph))


@dataclass
class ReplayStats:
    """Counts of a bundle replay, for the summary line."""

    bins: int = 0  # bins replayed (including those without values)
    requests: int = 0
    frames: int = 0
    accepted: int = 0
    duplicates: int = 0
    corrected: int = 0
    retries: int = 0
    last: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    @property
    def elapsed(self) -> float:
        """Seconds since the replay started."""
        return time.monotonic() - self.started


async def replay(
    api: Api,
    run_id: str,
    per_bin: list[list[dict[str, Any]]],
    *,
    speed: float | None = None,
    on_bin: Callable[[ReplayStats], None] | None = None,
    stop: asyncio.Event | None = None,
) -> ReplayStats:
    """Send the bins in order, bin i no earlier than i / speed seconds after the start."""
    stats = ReplayStats()
    for i, frames in enumerate(per_bin):
        if stop is not None and stop.is_set():
            break
        if speed:
            delay = stats.started + i / speed - time.monotonic()
            if delay > 0:
                if stop is None:
                    await asyncio.sleep(delay)
                else:
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                        break
                    except TimeoutError:
                        pass
        if frames:
            answer, retries = await api.ingest(run_id, frames)
            stats.requests += 1
            stats.frames += len(frames)
            stats.retries += retries
            for key in ("accepted", "duplicates", "corrected"):
                setattr(stats, key, getattr(stats, key) + int(answer.get(key) or 0))
            stats.last = answer
        stats.bins = i + 1
        if on_bin is not None:
            on_bin(stats)
    return stats


async def _ingest(args: argparse.Namespace, console: Console) -> int:
    async with Api(args.url, args.token) as api:
        per_bin = await bundle_frames(api, args.run_id, Path(args.bundle))
        columns = (
            TextColumn("ingest {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("bins"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(args.run_id, total=len(per_bin))
            stats = await replay(
                api, args.run_id, per_bin, speed=args.speed, on_bin=lambda s: progress.update(task, completed=s.bins)
            )
        if args.close:
            await api.json("POST", f"/v1/runs/{args.run_id}/close")
    rate = stats.bins / stats.elapsed if stats.elapsed > 0 else 0.0
    console.print(
        f"ingested {stats.bins} bins ({stats.requests} requests, {stats.frames} frames) into {args.run_id} "
        f"in {stats.elapsed:.1f} s ({rate:.1f} bins/s): accepted {stats.accepted}, duplicates "
        f"{stats.duplicates}, corrected {stats.corrected}, 429 retries {stats.retries}; "
        f"lastBin {stats.last.get('lastBin')}, watermark {stats.last.get('watermark')}"
        + ("; run closed" if args.close else ""),
        highlight=False,
    )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """`flowtime ingest`: replay a bundle's frames into a live run."""
    if args.speed is not None and args.speed <= 0:
        raise BadInputError("--speed must be a positive number of bins per second")
    return asyncio.run(_ingest(args, console()))


def default_url() -> str:
    """The service address client commands use without `--url`: `FLOWTIME_URL`, else the local default."""
    return os.environ.get("FLOWTIME_URL") or DEFAULT_URL


def add_client_args(p: argparse.ArgumentParser) -> None:
    """The `--url` and `--token` options every client command takes."""
    p.add_argument(
        "--url", default=default_url(), help=f"service address (default: env FLOWTIME_URL, else {DEFAULT_URL})"
    )
    p.add_argument("--token", help="bearer token (when the service has auth on)")


def register(sub: Any) -> None:
    """Add `ingest` to the `flowtime` parser."""
    p = sub.add_parser("ingest", help="replay a telemetry bundle into a live run")
    p.add_argument("run_id")
    p.add_argument("--bundle", required=True, help="telemetry bundle folder (manifest.json + CSVs)")
    p.add_argument("--speed", type=float, help="bins per second (default: as fast as the server accepts)")
    p.add_argument("--close", action="store_true", help="close the run when the bundle is exhausted")
    add_client_args(p)
    p.set_defaults(func=cmd_ingest)


__all__ = ["Api", "ReplayStats", "bundle_frames", "register", "replay"]
