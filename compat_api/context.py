"""What every route can reach: settings, auth, metrics, and the live engine, hub and Kafka wiring
when the service runs them (built by `compat_api.compose`; tests build smaller ones)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fastapi import Request

from compat_api.run_store import RunStore
from compat_api.settings import Settings

if TYPE_CHECKING:
    from compat_api.kafka_wiring import KafkaWiring
    from compat_api.live_api import LiveApi
    from compat_api.metrics import Metrics
    from stream_hub.hub import Hub


class Authenticator(Protocol):
    """Checks bearer tokens (`compat_api.auth`)."""

    enabled: bool

    def check(self, token: str | None, scope: str, run_id: str | None) -> None:
        """Raise UnauthenticatedError / ForbiddenError unless `token` grants `scope` on `run_id`."""


class AllowAll:
    """Auth off: every request may do everything."""

    enabled = False

    def check(self, token: str | None, scope: str, run_id: str | None) -> None:
        """Allow."""
        return None


@dataclass
class AppContext:
    """The service's collaborators as the routes see them."""

    settings: Settings
    auth: Authenticator = field(default_factory=AllowAll)
    metrics: Metrics | None = None
    live: LiveApi | None = None  # the live engine, when the service runs one
    hub: Hub | None = None
    kafka: KafkaWiring | None = None  # set at start-up when Kafka is configured
    pending_runs: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)  # async batch runs
    _run_store: RunStore | None = None

    @property
    def run_store(self) -> RunStore:
        """Finished runs on disk (one store per context, rebuilt if the data folder changed)."""
        if self._run_store is None or self._run_store.runs_dir != self.runs_dir:
            self._run_store = RunStore(self.runs_dir, self.inputs_dir)
        return self._run_store

    @property
    def data_dir(self) -> Path:
        """`<dataDir>`."""
        return self.settings.data_dir

    @property
    def runs_dir(self) -> Path:
        """`<dataDir>/runs`."""
        return self.settings.data_dir / "runs"

    @property
    def bundles_dir(self) -> Path:
        """`<dataDir>/bundles`."""
        return self.settings.data_dir / "bundles"

    @property
    def inputs_dir(self) -> Path:
        """`<dataDir>/inputs`."""
        return self.settings.data_dir / "inputs"

    @property
    def compares_dir(self) -> Path:
        """`<dataDir>/compares`."""
        return self.settings.data_dir / "compares"


async def get_ctx(request: Request) -> AppContext:  # async: no thread-pool hop per request
    """The app's context (a FastAPI dependency)."""
    ctx: AppContext = request.app.state.ctx
    return ctx
