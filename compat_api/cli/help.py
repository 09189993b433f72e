"""`flowtime --version` and the documented flags of `flowtime serve` (SPEC §12.11).

The serve flags take no argparse default: a flag given wins over `FLOWTIME_*` and the config file,
so an absent flag must stay None. Their help shows the effective default instead, read from
`Settings`, and where the value may come from.
"""

from __future__ import annotations

import argparse
from importlib import metadata
from pathlib import Path

from compat_api.settings import Settings

DISTRIBUTION = "flowtime-live"

# flag → (dest, type, help); the default shown is Settings' default for dest
SERVE_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--host", "host", str, "address to listen on; without tokens only loopback is allowed"),
    ("--port", "port", int, "TCP port"),
    ("--data-dir", "data_dir", str, "data folder: runs/, bundles/, templates/, compares/"),
    ("--config", "config", str, "TOML file of settings (keys as the flags, `a_b` for --a-b)"),
    ("--tokens-file", "tokens_file", str, "bearer tokens file: turns auth on (docs/security.md)"),
    ("--kafka-bootstrap", "kafka_bootstrap", str, "Kafka bootstrap servers HOST:PORT; without it no Kafka is used"),
    ("--kafka-telemetry-topic", "kafka_telemetry_topic", str, "topic of ingest frames"),
    ("--kafka-events-topic", "kafka_events_topic", str, "topic the events are published to"),
    ("--kafka-group", "kafka_group", str, "consumer group of the engine"),
    ("--log-level", "log_level", str, "debug | info | warning | error | critical (JSON lines on stderr)"),
)


def version() -> str:
    """The installed version of the package (the source tree's when it is not installed)."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree on sys.path
        return "0+unknown"


def add_version(p: argparse.ArgumentParser) -> None:
    """`flowtime --version`."""
    p.add_argument("--version", action="version", version=f"flowtime {version()}")


def add_serve_flags(p: argparse.ArgumentParser) -> None:
    """The flags of `flowtime serve`, each with its help, its environment variable and its default."""
    p.description = (
        "Start the FlowTime Live service. Each flag --a-b is also env FLOWTIME_A_B and config key a_b; "
        "flags win over the environment, which wins over the --config file."
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    fields = Settings.model_fields
    for flag, dest, kind, text in SERVE_FLAGS:
        default = fields[dest].default
        shown = "none" if default is None else f"./{default}" if isinstance(default, Path) else str(default)
        env = "FLOWTIME_" + dest.upper()
        p.add_argument(
            flag,
            dest=dest,
            type=kind,
            metavar=dest.rsplit("_", 1)[-1].upper(),
            help=f"{text} (default {shown}; env {env})",
        )


__all__ = ["SERVE_FLAGS", "add_serve_flags", "add_version", "version"]
