"""`flowtime stream runs RUN_ID`: tail a live run over the WebSocket stream (SPEC §7, §9).

`StreamTail` subscribes with a cursor, tracks `(epoch, seq)` from every event (a snapshot moves the
cursor to its position), and after a dropped connection reconnects with that cursor, so nothing is
missed or repeated; it says so through `on_notice`. The server's close 1000 (run completed) ends the
tail with exit 0; 4401/4403/4404/1008 are bad input (exit 2); when the server stays unreachable for
`retry_seconds` it gives up (exit 3). `TailView` folds events into the latest per-node metrics, and
`render_table` draws it with rich (both in `compat_api.cli.tail_view`); `--json` prints each server
message as received, one per line. `--class ID` subscribes with `classes: [ID]` and shows that
class's values on class-bearing nodes (class-less nodes keep their totals, marked so: docs/classes.md).
Messages, cursors and close codes are those of `engine_live.protocol`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from rich.console import Console
from rich.live import Live
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from compat_api.cli.client import add_client_args, console
from compat_api.cli.output import detach_stdout
from compat_api.cli.tail_view import Rendered, TailView, render_table
from engine_live.errors import BadInputError, OutputClosedError, ServerError, StreamError
from engine_live.protocol import (
    SEQD_TYPES,
    CloseCode,
    Cursor,
    EventType,
    decode_event,
    encode_event,
    subscribe_message,
)
from engine_live.protocol import parse_cursor as parse_wire_cursor
from engine_live.subscribe_options import parse_classes

FATAL_CLOSES: dict[int, str] = {  # closes that reconnecting cannot fix (exit 2)
    CloseCode.POLICY_VIOLATION: "protocol violation",
    CloseCode.MESSAGE_TOO_BIG: "message too big",
    CloseCode.UNAUTHENTICATED: "unauthenticated",
    CloseCode.FORBIDDEN: "forbidden",
    CloseCode.UNKNOWN_RUN: "unknown run",
    CloseCode.AUTH_TIMEOUT: "no auth in time",
}


def parse_cursor(text: str) -> Cursor:
    """`--since EPOCH:SEQ` → Cursor(epoch, seq) (the protocol's parser); BadInputError when malformed."""
    try:
        return parse_wire_cursor(text)
    except StreamError:
        raise BadInputError(f"--since {text!r}: expected EPOCH:SEQ, e.g. 3f9a1c2e:41") from None


def stream_url(http_url: str, run_id: str) -> str:
    """The WebSocket URL of a run's stream on the service at `http_url`."""
    base = http_url.rstrip("/")
    for scheme, ws in (("https://", "wss://"), ("http://", "ws://")):
        if base.startswith(scheme):
            base = ws + base[len(scheme) :]
            break
    return f"{base}/v1/runs/{quote(run_id, safe='')}/stream"


class StreamTail:
    """One logical subscription over as many WebSocket connections as it takes."""

    def __init__(
        self,
        url: str,
        run_id: str,
        *,
        since: Cursor | None = None,
        nodes: list[str] | None = None,
        classes: list[str] | None = None,
        token: str | None = None,
        on_message: Callable[[dict[str, Any], str], None] | None = None,
        on_notice: Callable[[str], None] | None = None,
        retry_seconds: float = 60.0,
    ) -> None:
        self.url, self.run_id, self.token = stream_url(url, run_id), run_id, token
        self.cursor, self.nodes, self.classes = Cursor(*since) if since else None, nodes, classes
        self.on_message = on_message or (lambda msg, raw: None)
        self.on_notice = on_notice or (lambda text: None)
        self.retry_seconds = retry_seconds
        self.connections = 0
        self.messages = 0
        self.gaps: list[tuple[int, int]] = []

    def track(self, msg: dict[str, Any]) -> None:
        """Move the cursor: seq'd events advance it, a snapshot sets it; repeats of a seq are ignored."""
        kind, epoch, seq = msg.get("type"), msg.get("epoch"), msg.get("seq")
        if not isinstance(epoch, str) or not isinstance(seq, int):
            return
        if kind == EventType.SNAPSHOT:
            self.cursor = Cursor(epoch, seq)
            return
        if kind not in SEQD_TYPES:
            return
        if self.cursor is None or epoch != self.cursor.epoch:
            if self.cursor is not None:
                self.on_notice(f"new epoch {epoch} (was {self.cursor.epoch})")
            self.cursor = Cursor(epoch, seq)
        elif seq > self.cursor.seq:
            if seq > self.cursor.seq + 1:
                self.gaps.append((self.cursor.seq + 1, seq - 1))
                self.on_notice(f"gap: seq {self.cursor.seq + 1}..{seq - 1} missed")
            self.cursor = Cursor(epoch, seq)

    async def _session(self) -> int:
        """One connection: subscribe, then read until it closes; returns the close code."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        async with connect(self.url, additional_headers=headers, open_timeout=10, max_size=None) as ws:
            self.connections += 1
            try:  # the server may close at once (unknown run, auth): the close code says why
                await ws.send(encode_event(subscribe_message(self.cursor, self.nodes, classes=self.classes)).decode())
                async for raw in ws:
                    text = raw if isinstance(raw, str) else raw.decode()
                    msg = decode_event(text)
                    self.messages += 1
                    if msg.get("type") == EventType.SUBSCRIBED and self.connections > 1:
                        how = "replaying what was missed" if msg.get("recovered") else "from a snapshot"
                        self.on_notice(f"reconnected at {self.cursor_text()} ({how})")
                    self.track(msg)
                    self.on_message(msg, text)
            except ConnectionClosed:
                pass
            return ws.close_code if ws.close_code is not None else CloseCode.ABNORMAL

    def cursor_text(self) -> str:
        """The cursor as `EPOCH:SEQ` (what `--since` takes), or "the start"."""
        return f"{self.cursor.epoch}:{self.cursor.seq}" if self.cursor else "the start"

    async def run(self) -> int:
        """Tail until the run completes (close 1000) → 0. Raises BadInputError / ServerError."""
        failing_since: float | None = None
        delay, last_notice = 0.1, 0.0
        while True:
            code: int | None = None
            before = self.messages
            try:
                code = await self._session()
            except (OSError, InvalidHandshake, TimeoutError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                reason = FATAL_CLOSES.get(code, f"close code {code}")
                if self.messages > before:  # the connection worked: a fresh retry budget
                    failing_since, delay = None, 0.1
            if code == CloseCode.NORMAL:
                return 0
            if code in FATAL_CLOSES:
                raise BadInputError(f"stream of {self.run_id} closed: {reason}", code=f"ws_{code}")
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > self.retry_seconds:
                raise ServerError(f"cannot reach {self.url} for {self.retry_seconds:.0f} s ({reason})")
            if now == failing_since or now - last_notice >= 10.0:  # say so once, then every 10 s
                last_notice = now
                self.on_notice(f"connection lost ({reason}); reconnecting from {self.cursor_text()}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)


async def newest_live_run(url: str, token: str | None) -> str:
    """The id of the most recently created run that is live on the service (BadInputError: none)."""
    from compat_api.cli.client import Api

    async with Api(url, token) as api:
        body = await api.json("GET", "/v1/runs", params={"mode": "live", "status": "live", "pageSize": 200})
    runs = [r for r in (body or {}).get("items") or [] if isinstance(r, dict) and r.get("runId")]
    if not runs:
        raise BadInputError(f"no live run on {url}: start one (flowtime demo) or name a run: flowtime stream runs ID")
    newest = max(runs, key=lambda r: str(r.get("createdUtc") or ""))
    return str(newest["runId"])


async def _tail(args: argparse.Namespace) -> int:
    nodes = [n.strip() for n in args.nodes.split(",") if n.strip()] if args.nodes else None
    since = parse_cursor(args.since) if args.since else None
    classes = _classes(args.class_id)
    err = Console(stderr=True, soft_wrap=True)  # notices are log lines: never wrapped
    if args.run_id is None:
        args.run_id = await newest_live_run(args.url, args.token)
        err.print(f"[stream] tailing {args.run_id}, the newest live run on {args.url}", highlight=False, markup=False)
    if args.json:

        def emit(msg: dict[str, Any], raw: str) -> None:
            try:
                sys.stdout.write(raw + "\n")
                sys.stdout.flush()
            except BrokenPipeError:  # `| head` has what it wanted: not a lost connection
                raise OutputClosedError("stdout was closed") from None

        tail = StreamTail(
            args.url,
            args.run_id,
            since=since,
            nodes=nodes,
            classes=classes,
            token=args.token,
            on_message=emit,
            on_notice=lambda t: err.print(f"[stream] {t}", highlight=False, markup=False),
            retry_seconds=args.retry_seconds,
        )
        return await tail.run()
    view = TailView(args.run_id, args.class_id)
    out = console()
    with Live(Rendered(view), console=out, refresh_per_second=4) as live:

        def notice(text: str) -> None:
            view.notices.append(text)
            live.console.print(f"[stream] {text}", highlight=False, markup=False)

        tail = StreamTail(
            args.url,
            args.run_id,
            since=since,
            nodes=nodes,
            classes=classes,
            token=args.token,
            on_message=lambda m, _: view.apply(m),
            on_notice=notice,
            retry_seconds=args.retry_seconds,
        )
        code = await tail.run()
        live.refresh()
    if not out.is_terminal:
        out.line()  # rich leaves a piped live display without its final newline
    out.print(f"run {args.run_id} {view.status} at {tail.cursor_text()}", highlight=False)
    return code


def _classes(class_id: str | None) -> list[str] | None:
    """`--class ID` → the subscribe message's `classes`; BadInputError when ID cannot be a class id."""
    try:
        return parse_classes([class_id] if class_id is not None else None)
    except StreamError:
        raise BadInputError(f"--class {class_id!r}: a class id is letters, digits, '_' or '-'") from None


def cmd_stream(args: argparse.Namespace) -> int:
    """`flowtime stream runs`: tail until the run completes (exit 0), Ctrl-C or stdout closes."""
    try:
        return asyncio.run(_tail(args))
    except KeyboardInterrupt:
        return 0  # stopping a tail is the normal way to end it
    except (OutputClosedError, BrokenPipeError):
        detach_stdout()  # nobody reads any more: stop quietly, like `head` expects
        return 0


def register(sub: Any) -> None:
    """Add `stream runs` to the command line."""
    s = sub.add_parser("stream", help="tail live runs").add_subparsers(dest="what", required=True)
    r = s.add_parser("runs", help="a live table of a run's nodes, reconnecting with its cursor")
    r.add_argument("run_id", nargs="?", help="the run to tail (default: the newest live run on the service)")
    r.add_argument("--since", help="cursor EPOCH:SEQ of the last event seen (replay starts after it)")
    r.add_argument("--nodes", help="comma-separated node ids to show")
    r.add_argument(
        "--class",
        dest="class_id",
        metavar="CLASSID",
        help="show this class's values instead of the totals on class-bearing nodes (class-less nodes: "
        "their totals, marked 'total (no classes)'; derived columns stay the node's)",
    )
    r.add_argument("--json", action="store_true", help="print raw events, one JSON object per line")
    r.add_argument(
        "--retry-seconds",
        dest="retry_seconds",
        type=float,
        default=60.0,
        help="give up when the server stays unreachable this long (default 60)",
    )
    add_client_args(r)
    r.set_defaults(func=cmd_stream)


__all__ = ["StreamTail", "TailView", "parse_cursor", "register", "render_table", "stream_url"]
