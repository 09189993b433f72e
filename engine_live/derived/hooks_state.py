"""Snapshot state of `DerivedHooks`: captured on the event loop by pointer copies, encoded off it.

What the hooks hold that a restore needs is the warning book, and the book's flags are exactly the
hooks' per-bin mirror (bin → flagged entity indices and their values; `_feed` replaces a bin's
arrays, never mutates them) plus, after a PATCH removed nodes, a few orphan keys the mirror no
longer covers. So a capture (`HooksCapture`, taken between two records) is O(bins + keys) pointer
copies: the mirror dict, the book's published dict (its warning dicts are replaced, never
mutated), the dirty keys and the orphans' cells. The commit thread turns it into `to_state()`:

    {"version": 2, "done", "keys": [[code, nodeId, seriesId], ...],   # entity index → key
     "published": [{"key", "warning"}, ...], "dirty": [key, ...],
     "cells": {"bin": int64[], "entity": int32[], "value": float64[]}}   # sorted by (bin, entity)

`split_cells` / `join_cells` separate the arrays from the JSON part (the snapshot writer stores
them in a binary file next to state.json). `build_book` rebuilds the book and the mirror from the
cells with numpy grouping: no per-cell JSON decoding, worst values by `reduceat`. Severity, the
worst rule and the message function of a key come from its code (`key_spec`), as `_feed` sets
them, so messages are recomputed exactly instead of being stored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine_live.warnings.book import Key, MessageFn, WarningBook, sort_key

STATE_VERSION = 2
IntArray = NDArray[np.integer[Any]]  # entity indices (intp when computed, int32 when loaded)
FloatArray = NDArray[np.float64]
Cells = tuple[IntArray, FloatArray]
KeySpec = Callable[[Key], tuple[str, str, MessageFn | None, str | None]]  # severity, worst, message_fn, message


@dataclass(frozen=True)
class HooksCapture:
    """The hooks' state as taken on the loop; `to_state()` (any thread) builds the state dict."""

    done: int
    keys: tuple[Key, ...]  # entity index → key (the hooks' layout)
    mirror: Mapping[int, Cells]  # bin → (entity indices, values); a private shallow copy
    published: Mapping[Key, dict[str, Any]]
    dirty: tuple[Key, ...]
    orphans: tuple[tuple[Key, list[int], list[float]], ...]  # book keys outside the layout

    def to_state(self) -> dict[str, Any]:
        """The version-2 state: keys, published, dirty and the flag cells (bin, entity, value) as arrays."""
        keys = list(self.keys)
        bins = sorted(self.mirror)
        parts = [self.mirror[bin_index] for bin_index in bins]
        counts = [len(part[0]) for part in parts]
        ents = [part[0].astype(np.int32) for part in parts]
        vals = [part[1] for part in parts]
        bin_parts = [np.repeat(np.asarray(bins, dtype=np.int64), counts)] if parts else []
        for key, obins, ovals in self.orphans:
            keys.append(key)
            bin_parts.append(np.asarray(obins, dtype=np.int64))
            ents.append(np.full(len(obins), len(keys) - 1, dtype=np.int32))
            vals.append(np.asarray(ovals, dtype=np.float64))
        cell_bins = np.concatenate(bin_parts) if bin_parts else np.zeros(0, dtype=np.int64)
        cell_ents = np.concatenate(ents) if ents else np.zeros(0, dtype=np.int32)
        cell_vals = np.concatenate(vals) if vals else np.zeros(0)
        cells = {"bin": cell_bins, "entity": cell_ents, "value": cell_vals}
        if self.orphans:  # the mirror's bins are ascending and so are each bin's entities: sorted already
            order = np.lexsort((cell_ents, cell_bins))
            cells = {"bin": cell_bins[order], "entity": cell_ents[order], "value": cell_vals[order]}
        published = [{"key": list(key), "warning": self.published[key]} for key in sorted(self.published, key=sort_key)]
        return {
            "version": STATE_VERSION,
            "done": self.done,
            "keys": [list(key) for key in keys],
            "published": published,
            "dirty": [list(key) for key in sorted(self.dirty, key=sort_key)],
            "cells": cells,
        }


def split_cells(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, NDArray[Any]]]:
    """(the JSON-able part, the cell arrays) of a version-2 state."""
    cells = state["cells"]
    return {key: value for key, value in state.items() if key != "cells"}, dict(cells)


def join_cells(part: dict[str, Any], cells: Mapping[str, NDArray[Any]]) -> dict[str, Any]:
    """The version-2 state of a JSON-able part and its cell arrays (`split_cells` undone)."""
    return {
        **part,
        "cells": {
            "bin": np.asarray(cells["bin"], dtype=np.int64),
            "entity": np.asarray(cells["entity"], dtype=np.int32),
            "value": np.asarray(cells["value"], dtype=np.float64),
        },
    }


def jsonable(state: Any) -> Any:
    """A state with its arrays as lists of reprs (JSON-able, == comparable: NaN cells compare equal)."""
    if isinstance(state, HooksCapture):
        state = state.to_state()
    if not isinstance(state, dict) or "cells" not in state:
        return state
    cells = {name: [repr(x) for x in np.asarray(column).tolist()] for name, column in state["cells"].items()}
    return {**state, "cells": cells}


def to_key(raw: Any) -> Key:
    """A warning key from its JSON list form."""
    code, node_id, series_id = raw
    return (str(code), node_id, series_id)


def build_book(
    state: Mapping[str, Any], layout_keys: tuple[Key, ...], spec: KeySpec
) -> tuple[WarningBook, dict[int, Cells]]:
    """The warning book and the per-bin mirror (entities of `layout_keys`) of a version-2 state."""
    saved = [to_key(raw) for raw in state["keys"]]
    at = {key: i for i, key in enumerate(layout_keys)}
    cells = state["cells"]
    bins = np.asarray(cells["bin"], dtype=np.int64)
    ents = np.asarray(cells["entity"])
    if ents.dtype.kind != "i":
        ents = ents.astype(np.int64)
    vals = np.asarray(cells["value"], dtype=np.float64)
    book = WarningBook()
    # as written, cells are sorted by (bin, entity): stable sorts by one key then suffice
    by_bin = bool(np.all((bins[1:] > bins[:-1]) | ((bins[1:] == bins[:-1]) & (ents[1:] > ents[:-1]))))
    if bins.size:
        by_key = np.argsort(ents, kind="stable") if by_bin else np.lexsort((bins, ents))
        key_ents, key_bins, key_vals = ents[by_key], bins[by_key], vals[by_key]
        starts = np.flatnonzero(np.concatenate([[True], key_ents[1:] != key_ents[:-1]]))
        ends = np.append(starts[1:], key_ents.size)
        specs = [spec(saved[ent]) for ent in key_ents[starts].tolist()]
        worst_of = {rule: _worst(key_vals, starts, rule) for rule in {key_spec[1] for key_spec in specs}}
        groups = zip(starts.tolist(), ends.tolist(), key_ents[starts].tolist(), strict=True)
        for group, (s0, s1, ent) in enumerate(groups):
            key = saved[ent]
            severity, worst, fn, message = specs[group]
            book.load_entry(
                key,
                key_bins[s0:s1],
                key_vals[s0:s1],
                float(worst_of[worst][group]),
                severity=severity,
                worst=worst,
                message_fn=fn,
                message=message,
            )
    for item in state["published"]:
        book.load_published(to_key(item["key"]), item["warning"])
    for raw in state["dirty"]:
        book.mark_dirty(to_key(raw))
    remap = np.array([at.get(key, -1) for key in saved] or [0], dtype=np.intp)
    mirror: dict[int, Cells] = {}
    if not bins.size:
        return book, mirror
    if by_bin and len(saved) and bool(np.all(remap == np.arange(len(saved)))):
        mb, me, mv = bins, ents, vals  # the same layout (the usual case): no remapping, no copies
    else:
        mine = remap[ents] >= 0
        mb, me, mv = bins[mine], remap[ents[mine]], vals[mine]
        kept = remap[remap >= 0]
        if not (by_bin and bool(np.all(kept[1:] > kept[:-1]))):  # the layout reorders entities: sort again
            order = np.lexsort((me, mb))
            mb, me, mv = mb[order], me[order], mv[order]
    firsts = np.flatnonzero(np.concatenate([[True], mb[1:] != mb[:-1]]))
    lasts = np.append(firsts[1:], mb.size)
    for s0, s1, bin_index in zip(firsts.tolist(), lasts.tolist(), mb[firsts].tolist(), strict=True):
        mirror[bin_index] = (me[s0:s1], mv[s0:s1])
    return book, mirror


def _worst(values: FloatArray, starts: IntArray, rule: str) -> FloatArray:
    """Per group [starts[g], starts[g+1]): the worst finite value under `rule` (NaN when none)."""
    finite = np.isfinite(values)
    has = np.logical_or.reduceat(finite, starts)
    if rule == "max":
        out = np.maximum.reduceat(np.where(finite, values, -np.inf), starts)
    elif rule == "min":
        out = np.minimum.reduceat(np.where(finite, values, np.inf), starts)
    else:  # largest |v|, the positive one on a tie
        mag = np.where(finite, np.abs(values), -1.0)
        top = np.maximum.reduceat(mag, starts)
        group = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, values.size)))
        out = np.maximum.reduceat(np.where(finite & (mag == top[group]), values, -np.inf), starts)
    return np.where(has, out, np.nan)


__all__ = ["STATE_VERSION", "HooksCapture", "build_book", "join_cells", "jsonable", "split_cells", "to_key"]
