"""The vocabulary a model document is checked against (SPEC §1), and the problem collector.

Holds the allowed node kinds and keys (per section and per node kind), the keys of the upstream
FlowTime schema that are accepted but unused (an info warning each), `Problems` (collects every
error and info warning of one document, so all are reported together) and `check_number`.
"""

from __future__ import annotations

import re
from typing import Any

ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
NODE_KINDS = ("const", "expr", "pmf", "serviceWithBuffer", "router")
TOPO_KINDS = ("service", "serviceWithBuffer", "queue", "dlq", "router", "sink")
TOP_KEYS = {"schemaVersion", "grid", "window", "nodes", "topology", "outputs", "rng", "provenance"}
UPSTREAM_KEYS = {
    "classes",
    "traffic",
    "metadata",
    "nodeRole",
    "group",
    "id",
    "type",
    "measure",
    "lag",
    "multiplier",
    "variables",
    "constraints",
    "parameters",
    "description",
    "title",
    "label",
    "tags",
    "aliases",
    "exhaustedFailures",
    "retryBudgetRemaining",
    "maxAttempts",
    "exhaustedPolicy",
    "backoffStrategy",
    "notes",
    "version",
    "unit",
    "category",
    "owner",
}
NODE_KEYS = {
    "const": {"values", "source"},
    "expr": {"expr", "initial"},
    "pmf": {"pmf"},
    "serviceWithBuffer": {
        "inflow",
        "outflow",
        "loss",
        "initial",
        "wipLimit",
        "wipLimitSeries",
        "wipOverflow",
        "dispatchSchedule",
    },
    "router": {"inputs", "routes", "router"},
}
SERIES_FIELDS = (
    "arrivals",
    "served",
    "errors",
    "capacity",
    "queueDepth",
    "externalDemand",
    "attempts",
    "failures",
    "retryEcho",
    "processingTimeMsSum",
    "servedCount",
)
SEMANTIC_KEYS = {*SERIES_FIELDS, "slaMin", "parallelism", "retryKernel"}
TOPO_NODE_KEYS = {
    "id",
    "kind",
    "semantics",
    "initialCondition",
    "ui",
    "wipLimit",
    "wipLimitSeries",
    "wipOverflow",
    "dispatchSchedule",
    "constraints",
}


class Problems:
    """Every error (`where: message`) and info warning found while checking one document."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.info: list[dict[str, Any]] = []

    def error(self, where: str, msg: str) -> None:
        """Record an error; `where` (node and field) prefixes the message unless empty."""
        self.errors.append(f"{where}: {msg}" if where else msg)

    def check_keys(self, where: str, obj: dict[str, Any], allowed: set[str]) -> None:
        """Keys of `obj` outside `allowed`: an info warning for an upstream key, else an error."""
        for key in obj:
            if key in allowed:
                continue
            if key in UPSTREAM_KEYS:
                self.info.append(
                    {
                        "code": "unused_upstream_key",
                        "severity": "info",
                        "nodeId": None,
                        "message": f"{where}: key '{key}' is accepted but not used by this engine",
                    }
                )
            else:
                self.error(where, f"unknown key '{key}'")


def check_number(problems: Problems, where: str, value: Any) -> float | None:
    """`value` as a float, or None (and an error) when it is not a number (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.error(where, f"expected a number, got {value!r}")
        return None
    return float(value)
