"""What `flowtime stream runs` shows: `TailView` folds server messages into the latest delta per node
plus the run's position, and `render_table` draws it with rich (one row per node).

With `--class ID` (`TailView.class_id`) a class-bearing node's row shows that class's values (its
`byClass[ID]`, SPEC §14) and a class-less node's row its totals, marked `total (no classes)`; the
derived columns (utilization, latency, colour) stay the node's, as in the state API.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from rich.table import Table

from engine_live.protocol import EventType

COLOURS = {"green": "green", "yellow": "yellow", "red": "red", "gray": "grey50", "dlq": "magenta"}
COLUMNS = (
    ("arrivals", "metrics"),
    ("served", "metrics"),
    ("errors", "metrics"),
    ("queueDepth", "metrics"),
    ("utilization", "derived"),
    ("latencyMinutes", "derived"),
)


@dataclass
class TailView:
    """What the terminal table shows: the latest delta per node plus the run's position."""

    run_id: str
    class_id: str | None = None  # `--class`: that class's values on class-bearing nodes
    epoch: str | None = None
    seq: int | None = None
    status: str = "connecting"
    bin_index: int | None = None
    bin_start: str | None = None
    last_bin: int | None = None
    watermark: int | None = None
    lag: int | None = None
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    notices: deque[str] = field(default_factory=lambda: deque(maxlen=3))

    def apply(self, msg: dict[str, Any]) -> None:
        """Fold one server message into the view."""
        kind = msg.get("type")
        if isinstance(msg.get("epoch"), str):
            self.epoch, self.seq = msg["epoch"], msg.get("seq", self.seq)
        if kind == EventType.SNAPSHOT:
            self._snapshot(msg.get("state") or {})
        elif kind == EventType.RUN_UPDATE:
            self.bin_index, self.bin_start = msg.get("binIndex"), msg.get("binStartUtc")
            self.last_bin, self.watermark = msg.get("lastBin"), msg.get("watermark")
            self.status = str(msg.get("status") or self.status)
            for d in msg.get("deltas") or []:
                if "nodeId" in d:
                    self.nodes[d["nodeId"]] = d
        elif kind == EventType.WARNING_UPDATE:
            w = msg.get("warning") or {}
            key = (str(w.get("code")), str(w.get("nodeId") or ""))
            if msg.get("op") == "clear":
                self.warnings.pop(key, None)
            else:
                self.warnings[key] = w
        elif kind == EventType.STATUS:
            self.status = str(msg.get("status"))
        elif kind == EventType.PROGRESS:
            self.watermark, self.lag = msg.get("watermark", self.watermark), msg.get("lagBins")
        if self.watermark is not None and self.last_bin is not None and kind != EventType.PROGRESS:
            self.lag = max(0, self.watermark - self.last_bin)

    def _snapshot(self, state: dict[str, Any]) -> None:
        self.status = str(state.get("status") or self.status)
        self.last_bin, self.watermark = state.get("lastBin"), state.get("watermark")
        self.bin_index = self.last_bin if isinstance(self.last_bin, int) and self.last_bin >= 0 else None
        self.bin_start = (state.get("bin") or {}).get("startUtc")
        self.nodes = {n["id"]: {"nodeId": n["id"], **n} for n in state.get("nodes") or [] if "id" in n}
        self.warnings = {(str(w.get("code")), str(w.get("nodeId") or "")): w for w in state.get("warnings") or []}


def _cell(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:,.0f}" if v.is_integer() else f"{v:.3f}" if abs(v) < 10 else f"{v:,.1f}"
    return str(v)


def _values(d: dict[str, Any], class_id: str | None) -> tuple[dict[str, Any], str]:
    """The metrics a row shows and what they are: with `--class`, the class's values on a class-bearing
    node (none when it lacks that class) and the totals, marked, on a class-less one."""
    by_class = d.get("byClass")
    if class_id is None:
        return d.get("metrics") or {}, ""
    if isinstance(by_class, dict):
        return by_class.get(class_id) or {}, class_id
    return d.get("metrics") or {}, "total (no classes)"


def render_table(view: TailView) -> Table:
    """The view as a rich table: one row per node, the run's position in the title and caption."""
    pos = f"epoch {view.epoch or '—'}  seq {_cell(view.seq)}  bin {_cell(view.bin_index)}"
    pos += f" ({view.bin_start})" if view.bin_start else ""
    caption = [
        f"lastBin {_cell(view.last_bin)}  watermark {_cell(view.watermark)}  lag {_cell(view.lag)}",
        f"warnings {len(view.warnings)}",
        *view.notices,
    ]
    title = f"{view.run_id}{f' — class {view.class_id}' if view.class_id else ''} — {view.status} — {pos}"
    table = Table(title=title, caption="  ·  ".join(caption))
    table.add_column("node")
    table.add_column("kind")
    if view.class_id:
        table.add_column("values")
    for name, _ in COLUMNS:
        table.add_column(name, justify="right")
    table.add_column("colour")
    for node_id, d in view.nodes.items():
        derived = d.get("derived") or {}
        colour = str(derived.get("color") or "gray")
        style = COLOURS.get(colour, "")
        metrics, shown = _values(d, view.class_id)
        cells = [_cell((metrics if group == "metrics" else derived).get(name)) for name, group in COLUMNS]
        head = [node_id, str(d.get("kind") or ""), *([shown] if view.class_id else [])]
        table.add_row(*head, *cells, f"[{style}]● {colour}[/]" if style else colour)
    return table


class Rendered:
    """A live display of a view (rich renders it afresh on every refresh)."""

    def __init__(self, view: TailView) -> None:
        self.view = view

    def __rich__(self) -> Table:
        return render_table(self.view)


__all__ = ["COLUMNS", "Rendered", "TailView", "render_table"]
