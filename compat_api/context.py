"""What every route can reach: settings, folders, auth, metrics, and the live engine (when running)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from fastapi import Request

from compat_api.settings import Settings


class Authenticator(Protocol):
    enabled: bool

    def check(self, token: str | None, scope: str, run_id: str | None) -> None:
        """Raise UnauthenticatedError / ForbiddenError unless `token` grants `scope` on `run_id`."""


class AllowAll:
    enabled = False

    def check(self, token: str | None, scope: str, run_id: str | None) -> None:
        return None


@dataclass
class AppContext:
    settings: Settings
    auth: Authenticator = field(default_factory=AllowAll)
    metrics: Any = None  # compat_api.metrics.Metrics
    live: Any = None  # compat_api.live_service.LiveService, when the engine runs
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def runs_dir(self) -> Path:
        return self.settings.data_dir / "runs"

    @property
    def bundles_dir(self) -> Path:
        return self.settings.data_dir / "bundles"

    @property
    def inputs_dir(self) -> Path:
        return self.settings.data_dir / "inputs"

    @property
    def compares_dir(self) -> Path:
        return self.settings.data_dir / "compares"


async def get_ctx(request: Request) -> AppContext:  # async: no thread-pool hop per request
    ctx: AppContext = request.app.state.ctx
    return ctx
