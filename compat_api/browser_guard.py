"""Browser guard (SPEC §10; docs/security.md#browsers): a pure ASGI middleware in front of the app.

With auth off (loopback only) reaching the port is the credential, and any web page the user visits
can make the browser reach it. So, for HTTP requests and WebSocket handshakes alike:

- `Host` must be a loopback name (`localhost`, `127.0.0.1`, `[::1]`, …) or in `allowed_hosts`
  (`*`: any): a DNS-rebound name is refused with 421 `bad_host` (a WebSocket: accepted, closed 1008);
- an `Origin`, when the request has one, must be the service's own (the scheme, host and port the
  request was sent to) or in `allowed_origins` (`*`: any): else 403 `forbidden_origin` (close 4403);
- a write (POST, PUT or PATCH with a body) must be sent as JSON, NDJSON or YAML (ingest also takes
  column lines and Arrow streams, types no browser sends without a preflight), else 415
  `unsupported_media_type`: what a form or a `no-cors` fetch can send without a CORS preflight
  (`text/plain`, form encodings, none) is refused.

With auth on, the credential is the bearer token, which a browser never attaches by itself (no
cookies; the WebSocket takes it in a message): `Host` and `Origin` are checked only when
`allowed_hosts` / `allowed_origins` are configured, and the content-type rule does not apply (SPEC
§10 asks it of auth-off mode; upstream FlowTime clients post YAML to `/v1/run` as `text/plain`).
Answers are the error tree's `{"error": code, "message", ...}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.datastructures import Headers

from compat_api.auth import is_loopback
from compat_api.context import AppContext
from compat_api.limits import ASGIApp, Receive, Scope, Send
from compat_api.settings import Settings
from engine_live.errors import BadHostError, FlowTimeError, ForbiddenError, UnsupportedMediaTypeError
from engine_live.protocol import close_code_for

WRITES = frozenset({"POST", "PUT", "PATCH"})
BODY_TYPES = (
    "application/json",
    "application/x-ndjson",
    "application/ndjson",
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "text/x-yaml",
    "application/x-flowtime-columns+ndjson",  # ingest bodies as columns (docs/api.md)
    "application/vnd.apache.arrow.stream",
)
DEFAULT_PORTS = {"http": 80, "https": 443}
WEB_SCHEMES = {"ws": "http", "wss": "https"}
Origin = tuple[str, str, int]  # scheme, host, port


def as_list(value: list[str] | str) -> list[str]:
    """A list setting given as a list or as one comma-separated string, without blanks."""
    items = value.split(",") if isinstance(value, str) else value
    return [item.strip() for item in items if item.strip()]


def split_host(value: str) -> tuple[str, int | None] | None:
    """`host[:port]` (IPv6 in brackets) → (lower-case host without brackets, port); None if malformed."""
    text = value.strip().lower()
    if text.startswith("["):
        host, closed, rest = text[1:].partition("]")
        port = rest[1:] if closed and rest.startswith(":") else None if rest or not closed else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if not host or port is None or (port and not port.isdigit()):
        return None
    return host, int(port) if port else None


def parse_origin(text: str) -> Origin | None:
    """An `Origin` (or configured origin) as (scheme, host, port); None for `null` or a malformed one."""
    try:
        parts = urlsplit(text.strip().lower())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname, port or DEFAULT_PORTS[parts.scheme]


@dataclass(frozen=True)
class GuardPolicy:
    """What the guard checks; None: that header is not checked."""

    hosts: frozenset[tuple[str, int | None]] | None
    any_host: bool
    origins: frozenset[Origin] | None
    any_origin: bool
    media: bool  # the content-type rule: auth off only (SPEC §10), so upstream clients posting text/plain
    # YAML to `/v1/run` keep working against a service with tokens

    @classmethod
    def of(cls, settings: Settings, auth_on: bool) -> GuardPolicy:
        """Auth off: Host and Origin always checked; auth on: only when configured."""
        hosts, origins = as_list(settings.allowed_hosts), as_list(settings.allowed_origins)
        host_keys = frozenset(k for k in map(split_host, hosts) if k is not None)
        origin_keys = frozenset(k for k in map(parse_origin, origins) if k is not None)
        return cls(
            hosts=None if auth_on and not hosts else host_keys,
            any_host="*" in hosts,
            origins=None if auth_on and not origins else origin_keys,
            any_origin="*" in origins,
            media=not auth_on,
        )

    def host_ok(self, host: tuple[str, int | None]) -> bool:
        """A loopback name, `*`, or a configured name (with its port when the entry gives one)."""
        name, port = host
        listed = self.hosts or frozenset()
        return self.any_host or is_loopback(name) or (name, None) in listed or (name, port) in listed

    def origin_ok(self, origin: Origin | None, own: Origin | None) -> bool:
        """The service's own origin, `*`, or a configured one."""
        return self.any_origin or (origin is not None and (origin == own or origin in (self.origins or ())))


def own_origin(scope: Scope, host: tuple[str, int | None] | None) -> Origin | None:
    """The origin the request was sent to: its scheme (ws → http) and its Host (else the server address)."""
    scheme = WEB_SCHEMES.get(str(scope.get("scheme", "http")), str(scope.get("scheme", "http")))
    if scheme not in DEFAULT_PORTS:
        return None
    if host is None:
        server = scope.get("server")
        if not server:
            return None
        host = (str(server[0]).lower(), int(server[1]) if server[1] is not None else None)
    return scheme, host[0], host[1] or DEFAULT_PORTS[scheme]


def media_type_error(scope: Scope, headers: Headers) -> UnsupportedMediaTypeError | None:
    """415 for a write with a body that is not sent as JSON, NDJSON or YAML."""
    if scope["type"] != "http" or scope.get("method") not in WRITES:
        return None
    length = headers.get("content-length")
    if "transfer-encoding" not in headers and (length is None or length.strip() == "0"):
        return None  # no body: nothing a browser could smuggle
    given = headers.get("content-type", "")
    media = given.split(";", 1)[0].strip().lower()
    if media in BODY_TYPES or media.endswith("+json"):
        return None
    return UnsupportedMediaTypeError(
        f"send the body as JSON (application/json), NDJSON (application/x-ndjson) or YAML (application/yaml), "
        f"not {media or 'without a content type'}",
        contentType=media or None,
        accepted=list(BODY_TYPES),
    )


def violation(policy: GuardPolicy, scope: Scope) -> FlowTimeError | None:
    """The first rule the request breaks, or None."""
    headers = Headers(scope=scope)
    host_text = headers.get("host")
    host = split_host(host_text) if host_text is not None else None
    if policy.hosts is not None and host_text is not None and (host is None or not policy.host_ok(host)):
        return BadHostError(
            f"Host '{host_text}' is not served here: only loopback names and allowed_hosts are", host=host_text
        )
    origin_text = headers.get("origin")
    checked = policy.origins is not None and origin_text is not None
    if checked and not policy.origin_ok(parse_origin(str(origin_text)), own_origin(scope, host)):
        return ForbiddenError(
            f"Origin '{origin_text}' may not use this service: only its own origin and allowed_origins may",
            code="forbidden_origin",
            origin=origin_text,
        )
    return media_type_error(scope, headers) if policy.media else None


async def refuse(scope: Scope, receive: Receive, send: Send, error: FlowTimeError) -> None:
    """Answer with the error: HTTP its status and JSON body; a WebSocket accepted, then closed with its code."""
    if scope["type"] == "websocket":
        if (await receive())["type"] == "websocket.connect":
            await send({"type": "websocket.accept"})
            await send({"type": "websocket.close", "code": int(close_code_for(error)), "reason": error.code})
        return
    body = json.dumps(error.to_body()).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": error.http_status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BrowserGuard:
    """`app.add_middleware(BrowserGuard, ctx=ctx)`, added last so that it runs first."""

    def __init__(self, app: ASGIApp, ctx: AppContext) -> None:
        self.app = app
        self.ctx = ctx
        self._policy: tuple[bool, GuardPolicy] | None = None

    def policy(self) -> GuardPolicy:
        """The policy for the context's settings and auth (rebuilt if auth is switched, as tests do)."""
        auth_on = bool(self.ctx.auth.enabled)
        if self._policy is None or self._policy[0] != auth_on:
            self._policy = (auth_on, GuardPolicy.of(self.ctx.settings, auth_on))
        return self._policy[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a request that breaks a rule; pass every other one (and lifespan) on."""
        if scope["type"] in ("http", "websocket"):
            error = violation(self.policy(), scope)
            if error is not None:
                await refuse(scope, receive, send, error)
                return
        await self.app(scope, receive, send)


__all__ = ["BODY_TYPES", "BrowserGuard", "GuardPolicy", "parse_origin", "split_host"]
