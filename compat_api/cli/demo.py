"""`flowtime demo`: the service plus a live run replaying a bundled telemetry set (SPEC §9, issue 7).

Steps: start the service in-process (uvicorn on 127.0.0.1 in a background thread, embedded defaults,
no Kafka, data under `--data-dir`); install the `microservices` template's bundle under
`<dataDir>/bundles/` and instantiate the template in telemetry mode; create a live run
`demo-<UTC timestamp>` through `POST /v1/runs`; replay the bundle at `--speed` bins per second
through `POST /v1/runs/{id}/bins` (the same code as `flowtime ingest`) while a `StreamTail` follows the
run over its WebSocket; print the dashboard URL and one status line per second.

The run is open-ended (the template's grid without `bins`): stopping early closes it at the last bin
sent instead of zero-filling the rest of the day with `data_gap` warnings.

Stopping: when the bundle is exhausted (it says so), at the `--duration` deadline, or on Ctrl-C /
SIGTERM, the run is closed, the demo waits for it to complete (its artifacts written), shuts the
server down and prints a summary. Without `--duration` the server stays up after the replay (the
dashboard keeps working) until Ctrl-C. A second Ctrl-C aborts at once (exit 3). Output goes through
`compat_api.cli.output.say`: with stdout piped into a `tee` that the same Ctrl-C killed, the demo
still stops (it sets its stop flag before it says anything) and goes on without output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import uvicorn
import yaml

from compat_api.cli.client import Api, ReplayStats, bundle_frames, replay
from compat_api.cli.output import say
from compat_api.cli.stream import StreamTail, TailView
from compat_api.settings import Settings, load_settings
from engine_live.errors import BadInputError, ServerError
from engine_live.protocol import SEQD_TYPES, EventType

TEMPLATE = "microservices"
COMPLETE_TIMEOUT_S = 60.0
SUMMARY_WARNINGS = 10  # warnings listed by the summary; the rest are counted


class ServerThread:
    """The FlowTime service (create_app + uvicorn) on its own event loop in a daemon thread."""

    def __init__(self, settings: Settings) -> None:
        from compat_api.app import create_app
        from compat_api.compose import build_context
        from compat_api.logging_setup import configure_logging
        from compat_api.server import server_config

        configure_logging(settings.log_level)
        self.settings = settings
        app = create_app(settings, build_context(settings), freeze_gc=True)
        self.server = uvicorn.Server(server_config(settings, app, ws="websockets-sansio"))
        self.thread = threading.Thread(target=self._serve, name="flowtime-demo-server", daemon=True)
        self.error: BaseException | None = None

    def _serve(self) -> None:
        try:
            self.server.run()
        except BaseException as exc:  # reported by start(); uvicorn exits via SystemExit
            self.error = exc

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the service and wait until it listens (ServerError after `timeout_s`)."""
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise ServerError(
                    f"the service did not start on {self.settings.host}:{self.settings.port}"
                    + (f" ({self.error!r})" if self.error else "")
                )
            time.sleep(0.02)

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the service to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout_s)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def check_port(host: str, port: int) -> None:
    """ServerError when `port` on `host` cannot be bound."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ServerError(f"port {port} on {host} is not free ({exc.strerror}); pass --port") from None


def pick_run_id(runs_dir: Path, now: datetime | None = None) -> str:
    """`demo-<yyyyMMddTHHmmssZ>`, with `-2`, `-3`... when a run of that name already exists."""
    base = f"demo-{(now or datetime.now(UTC)):%Y%m%dT%H%M%SZ}"
    run_id, n = base, 1
    while (runs_dir / run_id).exists():
        n += 1
        run_id = f"{base}-{n}"
    return run_id


@dataclass
class DemoWatch:
    """Counts what the stream delivered; formats the per-second status line."""

    view: TailView
    total_bins: int
    events: int = 0
    warnings_raised: int = 0
    replay: ReplayStats | None = None
    started: float = field(default_factory=time.monotonic)

    def on_message(self, msg: dict[str, Any], raw: str) -> None:
        """Fold a stream message into the view and count events and raised warnings."""
        self.view.apply(msg)
        if msg.get("type") in SEQD_TYPES:
            self.events += 1
            if msg.get("type") == EventType.WARNING_UPDATE and msg.get("op") == "add":
                self.warnings_raised += 1

    def status_line(self) -> str:
        """One line of progress: bins sent, position, lag, events and warnings."""
        v, sent = self.view, self.replay.bins if self.replay else 0
        return (
            f"[{time.monotonic() - self.started:5.1f}s] sent {sent}/{self.total_bins} bins  "
            f"lastBin {v.last_bin if v.last_bin is not None else '—'}  seq {v.seq or 0}  "
            f"lag {v.lag if v.lag is not None else '—'}  events {self.events}  "
            f"warnings {len(v.warnings)} active ({self.warnings_raised} raised)  {v.status}"
        )


def _notice(text: str) -> None:
    say(f"[stream] {text}")


async def _ticker(watch: DemoWatch) -> None:
    while True:
        await asyncio.sleep(1.0)
        say(watch.status_line())


def _halt_on_signals(halt: asyncio.Event, task: asyncio.Task[Any]) -> None:
    loop = asyncio.get_running_loop()

    def handler() -> None:
        if halt.is_set():
            task.cancel()  # second Ctrl-C: abort
        else:
            halt.set()  # first, so that output that cannot be written does not keep the demo running
            say("\nstopping: closing the run (Ctrl-C again to abort)")

    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, handler)


async def _demo(args: argparse.Namespace, settings: Settings, base: str, model: str, bundle_dir: Path) -> int:
    halt = asyncio.Event()
    current = asyncio.current_task()
    assert current is not None
    _halt_on_signals(halt, current)
    if args.duration:
        asyncio.get_running_loop().call_later(args.duration, halt.set)
    async with Api(base, args.token) as api:
        run_id = pick_run_id(settings.data_dir / "runs")
        await api.json("POST", "/v1/runs", json={"mode": "live", "model": model, "options": {"runId": run_id}})
        per_bin = await bundle_frames(api, run_id, bundle_dir)
        say(f"demo run {run_id}: template '{TEMPLATE}' (telemetry mode), {len(per_bin)} bins at {args.speed:g} bins/s")
        say(f"dashboard: {base}/?run={run_id}")
        say(f"tail it:   flowtime stream runs {run_id} --url {base}")
        watch = DemoWatch(TailView(run_id), len(per_bin))
        tail = StreamTail(
            base,
            run_id,
            token=args.token,
            on_message=watch.on_message,
            on_notice=_notice,
            retry_seconds=10,
        )
        tail_task = asyncio.create_task(tail.run())
        ticker = asyncio.create_task(_ticker(watch))
        try:
            watch.replay = ReplayStats()
            try:
                watch.replay = await replay(
                    api, run_id, per_bin, speed=args.speed, stop=halt, on_bin=lambda s: setattr(watch, "replay", s)
                )
            except BadInputError as exc:
                if exc.code != "run_closed":
                    raise
                say(f"the run was closed by someone else: {exc.message}")
                halt.set()
            if not halt.is_set():
                say(f"replay finished: all {len(per_bin)} bins of the bundle sent")
            if not args.duration and not halt.is_set():
                say(f"the dashboard stays up at {base}/?run={run_id} — Ctrl-C to stop")
                await halt.wait()
            await api.json("POST", f"/v1/runs/{run_id}/close")
            async with asyncio.timeout(COMPLETE_TIMEOUT_S):
                await tail_task
            detail = await api.json("GET", f"/v1/runs/{run_id}")
        finally:
            ticker.cancel()
            tail_task.cancel()
            await asyncio.gather(ticker, tail_task, return_exceptions=True)
    say(watch.status_line())
    _summary(settings.data_dir / "runs" / run_id, detail, watch)
    return 0


def _summary(run_dir: Path, detail: dict[str, Any], watch: DemoWatch) -> None:
    warnings: list[dict[str, Any]] = []
    with contextlib.suppress(OSError, orjson.JSONDecodeError):
        warnings = orjson.loads((run_dir / "run.json").read_bytes()).get("warnings") or []
    shown = [w for w in warnings if w.get("severity") != "info"]
    snapshots = run_dir / "live" / "snapshots"
    bins = int(detail.get("lastBin", -1)) + 1
    sent = watch.replay.bins if watch.replay else 0
    say(
        f"summary: run {detail.get('runId')} {detail.get('status')}: {bins} bins ({sent} replayed), "
        f"{watch.events} events "
        f"(seq {detail.get('seq')}, epoch {detail.get('epoch')}), {len(shown)} warnings in run.json "
        f"({watch.warnings_raised} raised live)"
    )
    for w in shown[:SUMMARY_WARNINGS]:
        say(f"  warning {w.get('code')} {w.get('nodeId') or ''}: {w.get('message', '')}")
    if len(shown) > SUMMARY_WARNINGS:
        say(f"  … and {len(shown) - SUMMARY_WARNINGS} more in {run_dir / 'run.json'}")
    say(f"artifacts: {run_dir}" + (f"  snapshots: {snapshots}" if snapshots.is_dir() else ""))


def open_ended(model: str) -> str:
    """The model without `grid.bins`: a live run that ends where its telemetry ends (SPEC §12.7)."""
    doc = yaml.safe_load(model)
    doc["grid"].pop("bins", None)
    return str(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))


def cmd_demo(args: argparse.Namespace) -> int:
    """`flowtime demo`: serve, create a live run from the bundled template and replay its telemetry."""
    from compat_api.templates.catalog import install_template_bundle, instantiate

    if args.speed <= 0 or (args.duration is not None and args.duration <= 0):
        raise BadInputError("--speed and --duration must be positive")
    flags = {"host": "127.0.0.1", "port": args.port, "data_dir": args.data_dir, "log_level": args.log_level}
    settings = load_settings(flags).model_copy(update={"kafka_bootstrap": None})
    if settings.port == 0:
        settings = settings.model_copy(update={"port": free_port()})
    port = settings.port
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    bundle_dir = install_template_bundle(TEMPLATE, settings.data_dir / "bundles")
    rel = bundle_dir.relative_to(settings.data_dir).as_posix()
    model = open_ended(instantiate(TEMPLATE, {"telemetryDir": rel}, data_dir=settings.data_dir)[0])
    check_port(settings.host, port)
    server = ServerThread(settings)
    server.start()
    base = f"http://{settings.host}:{port}"
    say(f"FlowTime Live demo: service on {base} (data in {settings.data_dir})")
    try:
        return asyncio.run(_demo(args, settings, base, model, bundle_dir))
    except (asyncio.CancelledError, KeyboardInterrupt):
        say("aborted")
        return 3
    finally:
        server.stop()


def register(sub: Any) -> None:
    """Add `demo` to the command line."""
    d = sub.add_parser("demo", help="serve plus a live run replaying the bundled microservices telemetry")
    d.add_argument("--speed", type=float, default=4.0, help="bins per second (default 4)")
    d.add_argument("--duration", type=float, help="stop by itself after this many seconds")
    d.add_argument("--port", type=int, help="service port (default: FLOWTIME_PORT or 8080; 0 picks a free one)")
    d.add_argument(
        "--data-dir", dest="data_dir", help="data folder (default: FLOWTIME_DATA_DIR or ./data, as `flowtime serve`)"
    )
    d.add_argument("--log-level", dest="log_level", default="warning")
    d.add_argument("--token", help="bearer token, when FLOWTIME_TOKENS turns auth on")
    d.set_defaults(func=cmd_demo)


__all__ = ["DemoWatch", "ServerThread", "cmd_demo", "pick_run_id", "register"]
