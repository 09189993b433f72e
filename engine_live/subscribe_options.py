"""The options of a `subscribe` message (SPEC §7, §14) — `nodes`, `format`, `classes` — and the
`classes` filter applied to what the client receives. `engine_live.protocol.parse_subscribe` uses
the parsers; a malformed option is a StreamError (`bad_message`, close 1008).

- `nodes: [nodeId, ...] | null`: only those nodes' deltas in each `run_update` (`stream_hub`).
- `format: "full" | "compact"`: `run_update`s as they are, or as columns (`stream_hub.compact`).
- `classes: [classId, ...] | null` (absent: null, every class): every `byClass` the client receives
  — in `run_update` deltas and in the snapshot state (its `nodes` and its `window.nodes`) — keeps
  only those classes. Totals, `derived` and class-less nodes are untouched, and a class-bearing node
  keeps its `byClass` (`{}` when none of its classes is asked for), so it still reads as
  class-bearing. A well-formed id the run does not declare matches nothing; a list that is not one
  of class ids (`[A-Za-z0-9_-]+`) or holds more than `MAX_CLASSES` of them is malformed.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from engine_live.errors import StreamError
from engine_live.model.classes import CLASS_ID

__all__ = ["FORMATS", "MAX_CLASSES", "parse_classes", "parse_format", "parse_nodes", "trim_deltas", "trim_state"]

FORMATS = ("full", "compact")
MAX_CLASSES = 256


def parse_nodes(value: Any) -> list[str] | None:
    """The `nodes` option: a list of node ids, or None (every node)."""
    if value is not None and not (isinstance(value, list) and all(isinstance(node, str) for node in value)):
        raise StreamError("nodes must be a list of node ids or null", code="bad_message")
    return value


def parse_format(value: Any) -> str:
    """The `format` option: "full" or "compact"."""
    if value not in FORMATS:
        raise StreamError("format must be 'full' or 'compact'", code="bad_message")
    return str(value)


def parse_classes(value: Any) -> list[str] | None:
    """The `classes` option: a list of class ids, or None (every class)."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) and CLASS_ID.fullmatch(c) for c in value):
        raise StreamError("classes must be a list of class ids ([A-Za-z0-9_-]+) or null", code="bad_message")
    if len(value) > MAX_CLASSES:
        raise StreamError(f"classes may name at most {MAX_CLASSES} class ids", code="bad_message")
    return list(value)


def _trim(node: Any, classes: Collection[str]) -> Any:
    if not isinstance(node, dict):
        return node
    by_class = node.get("byClass")
    if not isinstance(by_class, dict):
        return node
    return node | {"byClass": {c: v for c, v in by_class.items() if c in classes}}


def trim_deltas(deltas: list[Any], classes: Collection[str]) -> list[Any]:
    """`run_update` deltas (or state nodes) with every `byClass` trimmed to `classes` (new dicts for
    the class-bearing ones; the others as they are)."""
    return [_trim(d, classes) for d in deltas]


def trim_state(state: dict[str, Any], classes: Collection[str]) -> dict[str, Any]:
    """A `/state/live` body (a snapshot's `state`) with the `byClass` of its nodes and of its
    window's nodes trimmed to `classes` (a shallow copy; `state` is not changed)."""
    out = dict(state)
    if isinstance(state.get("nodes"), list):
        out["nodes"] = trim_deltas(state["nodes"], classes)
    window = state.get("window")
    if isinstance(window, dict) and isinstance(window.get("nodes"), list):
        out["window"] = window | {"nodes": trim_deltas(window["nodes"], classes)}
    return out
