"""Authorization of every run id a request touches (SPEC §10, §12.15; docs/security.md#endpoints).

`Access` is the request's bearer token bound to the service's authenticator. Path ids are checked
by the route dependency (`compat_api.auth.require`); routes ask `Access` about the rest: ids in the
body (compare's runs, an overlay's base, a capture's run, the run a telemetry bundle was captured
from), the id of a run they are about to create (explicit or generated), and they filter lists and
`/metrics` with it. Every question ends in the one check, `compat_api.auth.authorize`.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import Depends, Request

from compat_api.auth import authorize, bearer_token
from compat_api.context import AppContext, Authenticator, get_ctx
from engine_live.errors import ForbiddenError

RUN_LABEL = re.compile(rb'run_id="([^"]*)"')  # a Prometheus sample's run label (run ids need no escapes)


def new_live_run_id() -> str:
    """A generated live run id: the form the engine gives a run created without `options.runId`."""
    return f"live_{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}_{secrets.token_hex(4)}"


def run_of_ref(ref: str) -> str:
    """The run a reference belongs to: the run id itself, or the base of `runId/scenarios/sid`."""
    return ref.split("/", 1)[0]


@dataclass
class Access:
    """What the request's token may reach. With auth off every check passes."""

    auth: Authenticator
    token: str | None
    _answers: dict[tuple[str, str], bool] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        """Whether auth is on."""
        return self.auth.enabled

    def check(self, scope: str, *run_ids: str | None) -> None:
        """`scope` on every run id given (none: the scope only); 401/403 otherwise."""
        authorize(self.auth, self.token, scope, run_ids or (None,))

    def allows(self, scope: str, run_id: str) -> bool:
        """Whether `check(scope, run_id)` passes (remembered per request, for lists)."""
        key = (scope, run_id)
        if key not in self._answers:
            try:
                self.check(scope, run_id)
                self._answers[key] = True
            except ForbiddenError:
                self._answers[key] = False
        return self._answers[key]

    def visible(
        self, items: Iterable[dict[str, Any]], run_of: Callable[[dict[str, Any]], str | None]
    ) -> list[dict[str, Any]]:
        """The items whose run (`run_of(item)`; None: no run) the token may read."""
        return [item for item in items if (rid := run_of(item)) is None or self.allows("read", rid)]

    def new_run(self, explicit: str | None, generate: Callable[[], str]) -> str | None:
        """The id a create request gives its run, checked with `ingest`: the explicit one; with auth on a
        generated one, refused (403) outside the token's run patterns; with auth off None (the engine
        picks it, as it always did)."""
        if explicit is not None:
            self.check("ingest", explicit)
            return explicit
        if not self.enabled:
            return None
        run_id = generate()
        try:
            self.check("ingest", run_id)
        except ForbiddenError as exc:
            raise ForbiddenError(
                f"{exc.message}: this token creates only runs whose ids match its run patterns, and the "
                "generated id does not; give an explicit id that matches (options.runId)",
                runId=run_id,
                hint="options.runId",
            ) from None
        return run_id

    def filter_metrics(self, body: bytes) -> bytes:
        """The Prometheus text without the samples of runs the token may not see (`metrics` on the run)."""
        if not self.enabled:
            return body
        kept = []
        for line in body.splitlines(keepends=True):
            label = None if line.startswith(b"#") else RUN_LABEL.search(line)
            if label is None or self.allows("metrics", label.group(1).decode("utf-8", "replace")):
                kept.append(line)
        return b"".join(kept)


async def get_access(request: Request, ctx: AppContext = Depends(get_ctx)) -> Access:  # noqa: B008
    """The request's `Access` (a FastAPI dependency; async: no thread-pool hop)."""
    return Access(ctx.auth, bearer_token(request))


__all__ = ["Access", "get_access", "new_live_run_id", "run_of_ref"]
