"""Service settings: CLI flags over `FLOWTIME_*` environment over a TOML config file (SPEC §11, §12.11).

A flag `--a-b` is env `FLOWTIME_A_B` and config key `a_b`. `flowtime serve --print-config` shows the
merged result with secrets masked.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from engine_live.plan.budget import DEFAULT_MAX_CELLS

SECRET_FIELDS = ("tokens",)


class Settings(BaseSettings):
    """The service settings; `load_settings` merges flags, `FLOWTIME_*` environment and config file."""

    model_config = SettingsConfigDict(env_prefix="FLOWTIME_", extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    data_dir: Path = Path("./data")
    config: Path | None = None
    tokens_file: Path | None = None
    tokens: str | None = None  # "token:scopes[:patterns];..." — for tests and containers
    # browser guard (docs/security.md): a list, or one comma-separated string (env)
    allowed_origins: list[str] | str = Field(default_factory=list)  # besides the service's own origin
    allowed_hosts: list[str] | str = Field(default_factory=list)  # besides loopback names; "*": any
    kafka_bootstrap: str | None = None
    kafka_telemetry_topic: str = "flowtime.telemetry"
    kafka_events_topic: str = "flowtime.events"
    kafka_group: str = "flowtime-engine"
    kafka_idempotence: bool = False
    log_level: str = "info"
    # limits and defaults (SPEC §12.16)
    max_body_bytes: int = 16 * 1024 * 1024
    max_frames_per_request: int = 10_000
    max_model_bytes: int = 8 * 1024 * 1024
    max_batch_cells: int = Field(default=DEFAULT_MAX_CELLS, ge=1)  # series × bins of one batch evaluation
    max_ws_message_bytes: int = 64 * 1024
    hub_history_events: int = 10_000
    hub_history_bytes: int = 64 * 1024 * 1024
    client_queue_events: int = 1_000
    ingest_queue_frames: int = 100_000
    heartbeat_seconds: float = 5.0
    ws_auth_timeout_seconds: float = 5.0
    # stream resources (SPEC §10, docs/stream-protocol.md): connections in total and per token (per
    # client address with auth off), time to subscribe, the shared encodings and snapshots (bytes)
    ws_max_connections: int = Field(default=1000, ge=1)
    ws_max_connections_per_token: int = Field(default=100, ge=1)
    ws_idle_seconds: float = Field(default=30.0, gt=0)
    ws_encoding_cache_bytes: int = Field(default=32 * 1024 * 1024, ge=0)
    ws_snapshot_cache_bytes: int = Field(default=128 * 1024 * 1024, ge=0)
    ws_snapshot_max_age_seconds: float = Field(default=5.0, ge=0)
    retry_after_seconds: int = 1
    state_window_max_bins: int = 500
    page_size: int = 50
    page_size_max: int = 200
    max_live_runs: int = 100
    max_live_bytes: int = 1024**3
    max_bins_ahead: int = 1440
    completed_stream_seconds: float = 3600.0
    snapshot_every_bins: int = 60
    snapshot_every_seconds: float = 30.0
    snapshots_kept: int = 2
    # recovery: when more records than this follow the snapshot, the earlier ones are replayed
    # without building their events (seq still counted) and the hub history restarts there (0: build all)
    recovery_history_records: int = 64
    fsync: bool = True

    def masked(self) -> dict[str, Any]:
        """The settings as JSON values, secrets replaced by `***` (for `--print-config`)."""
        out = self.model_dump(mode="json")
        for key in SECRET_FIELDS:
            if out.get(key):
                out[key] = "***"
        return out


def load_settings(flags: dict[str, Any] | None = None) -> Settings:
    """Merge: flags (non-None) over environment over the TOML file named by flags/env `config`."""
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    env_only = Settings(**{k: v for k, v in flags.items() if k == "config"})
    file_values: dict[str, Any] = {}
    config_path = flags.get("config") or env_only.config
    if config_path:
        with open(config_path, "rb") as fh:
            file_values = tomllib.load(fh)
    env_values = {k: v for k, v in env_only.model_dump().items() if k in env_only.model_fields_set}
    merged = {**file_values, **env_values, **flags}
    return Settings.model_validate({**file_values, **merged}) if merged else Settings()
