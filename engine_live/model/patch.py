"""Model adjustments (SPEC §6, §12.8): replace or append nodes from a bin on, in batch and live alike.

A patch `{fromBin?, nodes: [full node definitions], topology?: {nodes: [...]}}` replaces nodes by id
or appends them; nothing is removed, the grid and the set of telemetry-fed series stay as they are
(422 otherwise). Bins before `fromBin` keep the values they had; from `fromBin` on the patched model
is evaluated, reading the earlier bins as history. A series that did not exist before `fromBin`
holds 0 there. `flowtime run` applies a run's adjustments the same way, so batch ≡ live holds.
`V` is a run matrix (`V[row, bin]`, rows as a plan numbers its series).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine_live.errors import ModelError
from engine_live.model.build import build_model
from engine_live.model.document import load_model
from engine_live.model.series_defs import ModelGraph
from engine_live.plan.compiler import Plan, compile_model
from engine_live.plan.evaluator import evaluate_range

PATCH_KEYS = {"fromBin", "nodes", "topology"}


@dataclass(frozen=True)
class Adjustment:
    """One checked patch: the model revision it makes, its first bin and the nodes it replaces or adds."""

    model_revision: int
    from_bin: int
    nodes: list[dict[str, Any]]
    topology_nodes: list[dict[str, Any]]

    def to_wire(self) -> dict[str, Any]:
        """The patch as logged (model/adjustments.json)."""
        out: dict[str, Any] = {"modelRevision": self.model_revision, "fromBin": self.from_bin, "nodes": self.nodes}
        if self.topology_nodes:
            out["topology"] = {"nodes": self.topology_nodes}
        return out


def parse_patch(body: Any, *, model_revision: int, default_from: int) -> Adjustment:
    """Check a patch body `{fromBin?, nodes, topology?}` (ModelError naming the problem)."""
    if not isinstance(body, dict):
        raise ModelError("patch: must be an object {fromBin?, nodes, topology?}")
    unknown = set(body) - PATCH_KEYS
    if unknown:
        raise ModelError(f"patch: unknown key '{sorted(unknown)[0]}'")
    nodes = body.get("nodes") or []
    topology = body.get("topology")
    if topology is not None and not isinstance(topology, dict):
        raise ModelError("patch.topology: must be an object {nodes: [...]}")
    topo = (topology or {}).get("nodes") or []
    if not isinstance(nodes, list) or not all(
        isinstance(node, dict) and isinstance(node.get("id"), str) for node in nodes
    ):
        raise ModelError("patch.nodes: must be a list of full node definitions with ids")
    if not isinstance(topo, list) or not all(
        isinstance(node, dict) and isinstance(node.get("id"), str) for node in topo
    ):
        raise ModelError("patch.topology.nodes: must be a list of topology nodes with ids")
    if not nodes and not topo:
        raise ModelError("patch: nothing to change (give nodes or topology.nodes)")
    from_bin = body.get("fromBin", default_from)
    if isinstance(from_bin, bool) or not isinstance(from_bin, int) or from_bin < 0:
        raise ModelError(f"patch.fromBin: must be an integer >= 0, got {from_bin!r}")
    return Adjustment(model_revision, from_bin, copy.deepcopy(nodes), copy.deepcopy(topo))


def _merge(items: list[Any], updates: Sequence[dict[str, Any]]) -> list[Any]:
    out = list(items)
    where = {item.get("id"): i for i, item in enumerate(out) if isinstance(item, dict)}
    for update in updates:
        if update["id"] in where:
            out[where[update["id"]]] = update
        else:
            where[update["id"]] = len(out)
            out.append(update)
    return out


def patched_data(data: dict[str, Any], adj: Adjustment) -> dict[str, Any]:
    """A copy of the model data with the patch's nodes (and topology nodes) replaced by id or added."""
    new = copy.deepcopy(data)
    new["nodes"] = _merge(list(new.get("nodes") or []), adj.nodes)
    if adj.topology_nodes:
        topo = new.setdefault("topology", {}) or {}
        new["topology"] = topo
        topo["nodes"] = _merge(list(topo.get("nodes") or []), adj.topology_nodes)
    return new


def check_compatible(old: ModelGraph, new: ModelGraph) -> None:
    """A patched graph keeps the grid, the telemetry sources and every series (else ModelError)."""
    if old.grid != new.grid:
        raise ModelError("patch: the grid cannot change")
    if set(old.telemetry_ids()) != set(new.telemetry_ids()):
        changed = sorted(set(old.telemetry_ids()) ^ set(new.telemetry_ids()))
        raise ModelError(f"patch: telemetry sources cannot change ({', '.join(changed)})")
    old_series = {out for definition in old.defs for out in definition.outputs}
    new_series = {out for definition in new.defs for out in definition.outputs}
    if old_series - new_series:
        raise ModelError(f"patch: series cannot be removed ({', '.join(sorted(old_series - new_series))})")


def compile_patched(
    data: dict[str, Any], adj: Adjustment, old: ModelGraph, base_dir: Path | None, *, live: bool
) -> tuple[dict[str, Any], Plan]:
    """The patched model data and its plan (checked against the old graph)."""
    new_data = patched_data(data, adj)
    graph = build_model(load_model(new_data, base_dir=base_dir, live=live))
    check_compatible(old, graph)
    return new_data, compile_model(graph)


def rebase(old: Plan, V: np.ndarray, new: Plan) -> np.ndarray:
    """The matrix for the new plan: rows copied by series id, new series zero."""
    rebased = np.zeros((new.n_rows, V.shape[1]))
    for name, row in new.row.items():
        old_row = old.row.get(name)
        if old_row is not None:
            rebased[row] = V[old_row]
    return rebased


def evaluate_with_adjustments(
    data: dict[str, Any],
    adjustments: Sequence[dict[str, Any]],
    bins: int,
    telemetry: Mapping[str, np.ndarray] | None,
    base_dir: Path | None,
) -> tuple[Plan, np.ndarray]:
    """Batch evaluation of a model and its logged adjustments, in the live arithmetic order."""
    plan = compile_model(build_model(load_model(data, base_dir=base_dir)))
    V = np.zeros((plan.n_rows, bins))
    for sid, values in (telemetry or {}).items():
        V[plan.row[sid], : min(bins, len(values))] = values[:bins]
    done = 0
    for wire in adjustments:
        adj = parse_patch(
            {key: value for key, value in wire.items() if key != "modelRevision"},
            model_revision=int(wire.get("modelRevision", 0)),
            default_from=0,
        )
        cut = min(adj.from_bin, bins)
        if cut > done:
            with np.errstate(all="ignore"):
                evaluate_range(plan, V, 0, done, cut)
            done = cut
        data, new_plan = compile_patched(data, adj, plan.graph, base_dir, live=False)
        V, plan = rebase(plan, V, new_plan), new_plan
        done = min(done, adj.from_bin)
    if done < bins:
        with np.errstate(all="ignore"):
            evaluate_range(plan, V, 0, done, bins)
    return plan, V
