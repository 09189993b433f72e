"""The vocabulary a model document is checked against (SPEC §1), and the problem collector.

Holds the allowed node kinds and keys (per section and per node kind), upstream FlowTime's kinds and
spellings (SPEC §13), the keys of its schema that are accepted but unused (an info warning each), what
to write instead of legacy keys that stay errors (`*_HINTS`), `Problems` (collects every error and
warning of one document, so all are reported together) and `check_number`.
"""

from __future__ import annotations

import re
from typing import Any

ID_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
"""A node id: at most 100 characters, so `<id>@<ID>@DEFAULT.csv` stays a valid file name."""
MAX_TOPO_ID = 100
_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
MAX_FILE_NAME_BYTES = 200


def file_name_problem(name: str) -> str | None:
    """Why `name` cannot be a file name inside a run folder (`outputs[].as`, series files), or None:
    one plain name — no path separator, control character or leading dot — of at most 200 bytes."""
    if not name or name.startswith(".") or _UNSAFE_NAME.search(name) or name == "index.json":
        return f"{name!r} must be a plain file name (no '/', '\\', control characters or leading '.')"
    if len(name.encode("utf-8")) > MAX_FILE_NAME_BYTES:
        return f"a file name of at most {MAX_FILE_NAME_BYTES} bytes, got {len(name.encode('utf-8'))}"
    return None


def topo_id_problem(node_id: str) -> str | None:
    """Why a topology node id cannot be used (it names hidden series and their files), or None."""
    if len(node_id) > MAX_TOPO_ID:
        return f"id: at most {MAX_TOPO_ID} characters, got {len(node_id)}"
    if node_id.startswith(".") or _UNSAFE_NAME.search(node_id):
        return f"id: {node_id!r} must not contain '/', '\\' or control characters, nor start with '.'"
    return None


NODE_KINDS = ("const", "expr", "pmf", "serviceWithBuffer", "router")
NODE_KIND_ALIASES = {"backlog": "serviceWithBuffer"}
"""Upstream spellings of node kinds (its schema's `backlog` is a serviceWithBuffer)."""
TOPO_KINDS = (
    "service",
    "serviceWithBuffer",
    "queue",
    "dlq",
    "router",
    "sink",
    "dependency",
    "const",
    "constant",
    "pmf",
    "expr",
    "expression",
)
EVAL_KIND = {"dependency": "service", "const": "service", "constant": "service", "pmf": "service"}
EVAL_KIND |= {"expr": "service", "expression": "service"}
"""Topology kinds that upstream shows but evaluates like another kind (derived metrics and colours)."""
TOP_KEYS = {"schemaVersion", "grid", "window", "nodes", "topology", "outputs", "rng", "provenance"}
UPSTREAM_KEYS = {
    "classes",
    "traffic",
    "metadata",
    "generator",
    "mode",
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
    "notes",
    "version",
    "unit",
    "category",
    "owner",
    "displayName",
    "latencyMinutes",
}
SIM_SPEC = "a FlowTime-Sim simulation spec (arrivals/route) is not a model: write nodes: and topology:"
TOP_HINTS = {
    "seed": "write rng: {kind: pcg32, seed: <integer>}",
    "arrivals": SIM_SPEC,
    "route": SIM_SPEC,
    "service": SIM_SPEC,
    "edges": "write topology: {nodes: [...], edges: [...]}",
}
NODE_HINTS = {
    "formula": "write expr:",
    "expression": "expression: belongs to expr nodes — write kind: expr and expr:",
    "expressions": "write expr:",
    "spec": "write pmf: {values, probabilities}",
    "probabilities": "write pmf: {values, probabilities}",
    "semantics": "semantics belong to topology nodes: write topology: {nodes: [{id, semantics}]}",
}
TOPO_HINTS = {
    "semantic": "write semantics:",
    "initialConditions": "write initialCondition: {queueDepth: <number>}",
    "expr": "a topology node names series: write the expression as a node of nodes: and name it in semantics",
}
"""What to write instead of legacy or misplaced keys that are still rejected (the error says it)."""
NODE_KEYS = {
    "const": {"values", "source", "profile"},
    "expr": {"expr", "initial"},
    "pmf": {"pmf", "source", "profile"},
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
    "exhaustedFailures",
    "retryBudgetRemaining",
)
LABEL_KEYS = ("exhaustedPolicy", "backoffStrategy", "maxAttempts")
"""Semantics keys upstream documents as text or numbers shown to people: kept as labels, never series."""
SEMANTIC_ALIASES = {"queue": "queueDepth", "external_demand": "externalDemand"}
SEMANTIC_KEYS = {*SERIES_FIELDS, *LABEL_KEYS, *SEMANTIC_ALIASES, "slaMin", "parallelism", "retryKernel", "aliases"}
TOPO_NODE_KEYS = {
    "id",
    "kind",
    "nodeRole",
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

    def note(self, code: str, where: str, msg: str, *, node_id: str | None = None, severity: str = "info") -> None:
        """Record a warning (`legacy_field`, `pmf_renormalized`, ...) that does not stop the model."""
        self.info.append({"code": code, "severity": severity, "nodeId": node_id, "message": f"{where}: {msg}"})

    def check_keys(
        self, where: str, obj: dict[str, Any], allowed: set[str], hints: dict[str, str] | None = None
    ) -> None:
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
                hint = (hints or {}).get(key)
                self.error(where, f"unknown key '{key}'" + (f" — {hint}" if hint else ""))


def check_number(problems: Problems, where: str, value: Any) -> float | None:
    """`value` as a float, or None (and an error) when it is not a number (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        problems.error(where, f"expected a number, got {value!r}")
        return None
    return float(value)
