"""Bearer-token checks for REST routes (SPEC §10, §12.15). Placeholder until the security work lands:
`require(scope)` is the dependency every route uses; with auth off it allows everything."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, Request

from compat_api.context import AppContext, get_ctx


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def require(scope: str) -> Callable[..., None]:
    def check(request: Request, ctx: AppContext = Depends(get_ctx)) -> None:  # noqa: B008
        ctx.auth.check(bearer_token(request), scope, request.path_params.get("run_id"))

    return check
