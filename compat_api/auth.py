"""Bearer tokens (SPEC §10, §12.15): who may read, ingest or administer which runs.

Scopes nest: `admin` ⊇ `ingest` ⊇ `read` (an admin token may also ingest and read); `metrics`
(`GET /metrics`) stands apart: implied by `admin` only, never by `read` or `ingest`. A token may
carry run-id globs (`fnmatch`, e.g. `a*`); it then reaches only matching runs. `authorize` is the one
check: routes apply it to every run id a request touches (`compat_api.access`); a check without a
run id (listing, templates) needs the scope only, and lists are filtered to the runs it admits.
Tokens are kept as SHA-256 digests and compared with `hmac.compare_digest`; the plain text is never
stored, logged or echoed in an error.

Configuration (either or both):

* `tokens_file` — JSON (a list, or `{"tokens": [...]}`) or TOML (`[[tokens]]` tables; chosen by
  the `.toml` suffix). Each entry: `token` (plain) or `tokenSha256` (hex digest), `scopes`
  (`read` | `ingest` | `admin` | `metrics`), optional `runs` (globs), optional `expires` (RFC 3339), `name`.
* `tokens` (env `FLOWTIME_TOKENS`) — `secret:read,ingest:a*|demo-*;other:admin`: entries split by
  `;`, fields by `:` — the token (or `sha256=<hex>`), comma-separated scopes, optional `|`-separated
  run globs. Tokens themselves cannot contain `:` or `;`.

Off-by-default is only allowed on loopback: `check_bind` refuses any other host without tokens.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import tomllib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from fastapi import Depends, Request

from compat_api.context import AllowAll, AppContext, Authenticator, get_ctx
from compat_api.settings import Settings
from engine_live.errors import ForbiddenError, InsecureBindError, TokenConfigError, UnauthenticatedError
from engine_live.model.grid import parse_utc

SCOPES = ("read", "ingest", "admin", "metrics")
IMPLIED: dict[str, frozenset[str]] = {  # what each scope grants
    "read": frozenset({"read"}),
    "ingest": frozenset({"read", "ingest"}),
    "admin": frozenset({"read", "ingest", "admin", "metrics"}),
    "metrics": frozenset({"metrics"}),
}
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def digest(token: str) -> str:
    """The SHA-256 hex digest tokens are stored and compared as."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenGrant:
    """One configured token: its digest, never the token itself."""

    sha256: str
    scopes: frozenset[str]
    runs: tuple[str, ...] | None = None  # None: every run
    expires: datetime | None = None
    name: str = "token"

    def allows_scope(self, scope: str) -> bool:
        """Whether the grant's scopes include `scope` (admin ⊇ ingest ⊇ read; admin ⊇ metrics)."""
        return any(scope in IMPLIED[s] for s in self.scopes)

    def allows_run(self, run_id: str | None) -> bool:
        """Whether the grant's run patterns admit `run_id` (None: no run involved)."""
        return run_id is None or self.runs is None or any(fnmatchcase(run_id, p) for p in self.runs)


def grant(
    *,
    scopes: Iterable[str],
    token: str | None = None,
    token_sha256: str | None = None,
    runs: Iterable[str] | None = None,
    expires: str | datetime | None = None,
    name: str = "token",
    where: str = "token",
) -> TokenGrant:
    """Validate one token entry (exactly one of `token` / `token_sha256`)."""
    if (token is None) == (token_sha256 is None):
        raise TokenConfigError(f"{where}: give exactly one of token or tokenSha256")
    if token is not None and not token.strip():
        raise TokenConfigError(f"{where}: empty token")
    hexd = digest(token) if token is not None else str(token_sha256).lower()
    if len(hexd) != 64 or any(c not in "0123456789abcdef" for c in hexd):
        raise TokenConfigError(f"{where}: tokenSha256 must be 64 hex digits")
    scope_set = frozenset(scopes)
    bad = sorted(scope_set - set(SCOPES))
    if not scope_set or bad:
        raise TokenConfigError(f"{where}: scopes must be among {list(SCOPES)}, got {bad or 'none'}")
    when: datetime | None = None
    if isinstance(expires, datetime):
        when = expires if expires.tzinfo else expires.replace(tzinfo=UTC)
    elif expires is not None:
        try:
            when = parse_utc(str(expires))
        except ValueError:
            raise TokenConfigError(f"{where}: expires must be an RFC 3339 UTC time") from None
    patterns = tuple(runs) if runs is not None else None
    return TokenGrant(hexd, scope_set, patterns or None, when, name)


def parse_tokens_setting(text: str) -> list[TokenGrant]:
    """`secret:read,ingest:a*|b*;sha256=<hex>:admin` → grants (see the module docstring)."""
    out = []
    for i, entry in enumerate(e.strip() for e in text.split(";")):
        if not entry:
            continue
        parts = entry.split(":")
        where = f"tokens entry {i + 1}"
        if len(parts) not in (2, 3):
            raise TokenConfigError(f"{where}: expected token:scopes[:run-patterns]")
        secret, scopes = parts[0].strip(), [s.strip() for s in parts[1].split(",") if s.strip()]
        runs = [p.strip() for p in parts[2].split("|") if p.strip()] if len(parts) == 3 else None
        hashed = secret[7:] if secret.startswith("sha256=") else None
        out.append(
            grant(
                scopes=scopes,
                token=None if hashed else secret,
                token_sha256=hashed,
                runs=runs,
                name=f"env-{i + 1}",
                where=where,
            )
        )
    return out


def load_tokens_file(path: Path) -> list[TokenGrant]:
    """The grants of a JSON or TOML tokens file; TokenConfigError when unreadable."""
    try:
        raw = path.read_bytes()
        data: Any = tomllib.loads(raw.decode()) if path.suffix == ".toml" else json.loads(raw)
    except (OSError, ValueError) as exc:  # JSON, TOML and Unicode errors are ValueErrors
        raise TokenConfigError(f"tokens file {path}: cannot read it ({type(exc).__name__})") from None
    entries = data.get("tokens") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise TokenConfigError(f"tokens file {path}: expected a list of tokens")
    out = []
    for i, e in enumerate(entries):
        where = f"tokens file {path}: entry {i + 1}"
        if not isinstance(e, dict) or not isinstance(e.get("scopes", []), list):
            raise TokenConfigError(f"{where}: expected {{token | tokenSha256, scopes, runs?, expires?, name?}}")
        unknown = sorted(set(e) - {"token", "tokenSha256", "scopes", "runs", "expires", "name"})
        if unknown:
            raise TokenConfigError(f"{where}: unknown keys {unknown}")
        out.append(
            grant(
                scopes=e.get("scopes", []),
                token=e.get("token"),
                token_sha256=e.get("tokenSha256"),
                runs=e.get("runs"),
                expires=e.get("expires"),
                name=str(e.get("name", f"token-{i + 1}")),
                where=where,
            )
        )
    return out


class TokenAuthenticator:
    """The Authenticator of a configured service; `now` is injectable for expiry tests."""

    enabled = True

    def __init__(self, grants: Iterable[TokenGrant], now: Callable[[], datetime] | None = None) -> None:
        self.grants = tuple(grants)
        self._now = now or (lambda: datetime.now(UTC))

    def _find(self, token: str) -> TokenGrant | None:
        presented = digest(token)
        found = None
        for g in self.grants:  # compare against every grant: timing does not tell which one matched
            if hmac.compare_digest(presented, g.sha256):
                found = g
        return found

    def check(self, token: str | None, scope: str, run_id: str | None) -> None:
        """Return when the token grants `scope` on `run_id`; else UnauthenticatedError or ForbiddenError."""
        if not token:
            raise UnauthenticatedError("a bearer token is required")
        g = self._find(token)
        if g is None:
            raise UnauthenticatedError("invalid bearer token")
        if g.expires is not None and self._now() >= g.expires:
            raise UnauthenticatedError(f"token '{g.name}' has expired")
        if not g.allows_scope(scope):
            raise ForbiddenError(f"token '{g.name}' lacks the '{scope}' scope", scope=scope)
        if not g.allows_run(run_id):
            raise ForbiddenError(f"token '{g.name}' may not access run '{run_id}'", runId=run_id)


def load_grants(settings: Settings) -> list[TokenGrant]:
    """The grants of the tokens file and the `tokens` setting together."""
    grants = load_tokens_file(settings.tokens_file) if settings.tokens_file else []
    return grants + (parse_tokens_setting(settings.tokens) if settings.tokens else [])


def load_authenticator(settings: Settings) -> Authenticator:
    """TokenAuthenticator when tokens are configured, else AllowAll (auth off)."""
    grants = load_grants(settings)
    return TokenAuthenticator(grants) if grants else AllowAll()


def is_loopback(host: str) -> bool:
    """Whether a host name or address is loopback."""
    name = host.strip().strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_bind(settings: Settings, auth: Authenticator | None = None) -> str:
    """The startup log line about auth; raises InsecureBindError off loopback without tokens."""
    auth = auth if auth is not None else load_authenticator(settings)
    if auth.enabled:
        count = len(getattr(auth, "grants", ()))
        return f"auth is on: {count} bearer token(s) configured; listening on {settings.host}"
    if not is_loopback(settings.host):
        raise InsecureBindError(
            f"refusing to listen on {settings.host} without authentication: configure tokens "
            "(--tokens-file or FLOWTIME_TOKENS) or bind to 127.0.0.1",
            host=settings.host,
        )
    return f"auth is off (no tokens configured): listening on loopback {settings.host} only"


def bearer_token(request: Request) -> str | None:
    """The request's bearer token, if any."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def authorize(auth: Authenticator, token: str | None, scope: str, run_ids: Iterable[str | None] = (None,)) -> None:
    """THE authorization check (SPEC §10): `token` must grant `scope` on every run id in `run_ids`
    (None: no run). Raises UnauthenticatedError (401) or ForbiddenError (403) naming the first run
    refused. Every route, the WebSocket and the list filters go through here (`compat_api.access`)."""
    for run_id in run_ids:
        auth.check(token, scope, run_id)


def require(scope: str) -> Callable[..., Awaitable[None]]:
    """Route dependency: the request's bearer token must grant `scope` (on the path's `run_id`, if any).
    Run ids in bodies and queries, and ids the server generates, are checked by the route itself."""

    async def check(request: Request, ctx: AppContext = Depends(get_ctx)) -> None:  # noqa: B008
        # async: a sync dependency would cost every request a thread-pool hop
        authorize(ctx.auth, bearer_token(request), scope, (request.path_params.get("run_id"),))

    return check


__all__ = [
    "SCOPES",
    "TokenAuthenticator",
    "TokenGrant",
    "authorize",
    "bearer_token",
    "check_bind",
    "digest",
    "grant",
    "is_loopback",
    "load_authenticator",
    "load_grants",
    "load_tokens_file",
    "parse_tokens_setting",
    "require",
]
