"""Checking the `nodes` list of a model document (SPEC §1) into `NodeSpec`s.

One check per node kind (const, expr, pmf, serviceWithBuffer, router) and the dispatch schedule
that serviceWithBuffer nodes and topology queues share. Each entry is first put in canonical form
(`engine_live.model.dialect`: upstream FlowTime's spellings, SPEC §13). pmf probabilities that do not
sum to 1 within 1e-9 are renormalized (warning `pmf_renormalized`); all zero is an error. Problems go
to a `Problems` collector; a node too broken to describe comes back as None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine_live.model.checking import ID_RE, NODE_HINTS, NODE_KEYS, NODE_KINDS, Problems, check_number
from engine_live.model.dialect import canonical_node

PMF_POLICIES = ("repeat", "error")
"""Upstream's pmf `policy` (how a pmf spec shorter than the grid repeats): every bin reads the whole
pmf here, so both are accepted and change nothing."""
PMF_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Dispatch:
    """A periodic dispatch schedule: release every `period` bins from bin `phase`."""

    period: int
    phase: int
    capacity: str | None


@dataclass(frozen=True)
class NodeSpec:
    """One checked entry of `nodes` (its data in canonical form, dispatch schedule resolved)."""

    id: str
    kind: str
    index: int
    data: dict[str, Any]


def check_dispatch(problems: Problems, where: str, raw: Any) -> Dispatch | None:
    """The `dispatchSchedule` of a queue, or None when absent or invalid."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.error(where, "dispatchSchedule: must be a mapping")
        return None
    problems.check_keys(f"{where}: dispatchSchedule", raw, {"kind", "periodBins", "phaseOffset", "capacitySeries"})
    if raw.get("kind", "time-based") not in ("time-based", "periodic"):
        problems.error(where, f"dispatchSchedule.kind: must be time-based or periodic, got {raw.get('kind')!r}")
    period = raw.get("periodBins")
    if isinstance(period, bool) or not isinstance(period, int) or period < 1:
        problems.error(where, f"dispatchSchedule.periodBins: must be an integer >= 1, got {period!r}")
        return None
    phase = raw.get("phaseOffset", 0)
    if isinstance(phase, bool) or not isinstance(phase, int):
        problems.error(where, f"dispatchSchedule.phaseOffset: must be an integer, got {phase!r}")
        return None
    capacity = raw.get("capacitySeries")
    if capacity is not None and not isinstance(capacity, str):
        problems.error(where, "dispatchSchedule.capacitySeries: must name a series")
        capacity = None
    return Dispatch(period, phase % period, capacity)


def _check_const(problems: Problems, where: str, raw: dict[str, Any]) -> None:
    if ("values" in raw) == ("source" in raw):
        problems.error(where, "exactly one of values or source is required")
    elif "source" in raw:
        source = raw["source"]
        if not isinstance(source, str) or not (source == "telemetry" or source.startswith("file:")):
            problems.error(where, f"source: must be 'telemetry', 'file:<path>' or 'file://<path>', got {source!r}")
    elif not isinstance(raw["values"], list) and (
        isinstance(raw["values"], bool) or not isinstance(raw["values"], int | float)
    ):
        problems.error(where, "values: must be a list of numbers (or one number for every bin)")


def _check_expr(problems: Problems, where: str, raw: dict[str, Any]) -> None:
    if not isinstance(raw.get("expr"), str | int | float) or isinstance(raw.get("expr"), bool):
        problems.error(where, "expr: required (a string)")
    if "initial" in raw:
        check_number(problems, f"{where}: initial", raw["initial"])


def _pmf_total(problems: Problems, where: str, node_id: str, pmf: dict[str, Any]) -> None:
    """Renormalize probabilities that do not sum to 1 (a warning); an all-zero set is an error."""
    total = 0.0
    for probability in pmf["probabilities"]:
        total += float(probability)
    if total <= 0:
        problems.error(where, "pmf.probabilities: are all zero (give at least one positive probability)")
    elif abs(total - 1.0) > PMF_TOLERANCE:
        pmf["probabilities"] = [float(p) / total for p in pmf["probabilities"]]
        problems.note(
            "pmf_renormalized",
            where,
            f"pmf.probabilities sum to {total!r}; divided by their sum",
            node_id=node_id,
            severity="warning",
        )


def _check_pmf(problems: Problems, where: str, node_id: str, pmf: Any) -> dict[str, Any] | None:
    """The pmf mapping checked (a copy, probabilities renormalized when needed), or None."""
    if not isinstance(pmf, dict):
        problems.error(where, "pmf: required mapping {values, probabilities}")
        return None
    problems.check_keys(f"{where}: pmf", pmf, {"values", "probabilities", "sample", "policy"})
    if "policy" in pmf and pmf["policy"] not in PMF_POLICIES:
        problems.error(where, f"pmf.policy: must be one of {', '.join(PMF_POLICIES)}, got {pmf['policy']!r}")
    checked: dict[str, Any] = dict(pmf)
    values, probabilities = checked.get("values"), checked.get("probabilities")
    if (
        not isinstance(values, list)
        or not isinstance(probabilities, list)
        or len(values) != len(probabilities)
        or not values
    ):
        problems.error(where, "pmf: values and probabilities must be non-empty lists of equal length")
    elif all(check_number(problems, f"{where}: pmf", number) is not None for number in values + probabilities):
        if len(set(values)) != len(values):
            problems.error(where, "pmf.values: must be unique")
        if not all(math.isfinite(float(number)) for number in values):
            problems.error(where, "pmf.values: must be finite")
        if not all(math.isfinite(float(p)) and float(p) >= 0 for p in probabilities):
            problems.error(where, "pmf.probabilities: must be finite and at least 0")
        else:
            _pmf_total(problems, where, node_id, checked)
    return checked


def _check_buffer(problems: Problems, where: str, raw: dict[str, Any]) -> Dispatch | None:
    if "initial" in raw:
        check_number(problems, f"{where}: initial", raw["initial"])
    if "wipLimit" in raw:
        check_number(problems, f"{where}: wipLimit", raw["wipLimit"])
    return check_dispatch(problems, where, raw.get("dispatchSchedule"))


def _check_router(problems: Problems, where: str, node_id: str, raw: dict[str, Any]) -> dict[str, Any] | None:
    """The router's data (`{id, kind, inputs, routes}`), or None when its body is not a mapping."""
    body = raw.get("router", raw)
    if not isinstance(body, dict):
        problems.error(where, "router: must be a mapping")
        return None
    if body is not raw:
        problems.check_keys(f"{where}: router", body, {"inputs", "routes"})
    inputs = body.get("inputs")
    if not isinstance(inputs, dict) or not isinstance(inputs.get("queue"), str):
        problems.error(where, "inputs.queue: required (a series id)")
    routes = body.get("routes")
    if not isinstance(routes, list) or not routes:
        problems.error(where, "routes: required non-empty list")
    else:
        for j, route in enumerate(routes):
            if not isinstance(route, dict) or not isinstance(route.get("target"), str):
                problems.error(where, f"routes[{j}].target: required")
                continue
            problems.check_keys(f"{where}: routes[{j}]", route, {"target", "weight", "classes"})
            if "weight" in route:
                check_number(problems, f"{where}: routes[{j}].weight", route["weight"])
    return {"id": node_id, "kind": "router", "inputs": inputs, "routes": routes}


def _kind_of(problems: Problems, where: str, raw: dict[str, Any]) -> str | None:
    kind = raw.get("kind")
    if kind not in NODE_KINDS:
        problems.error(where, f"kind: must be one of {', '.join(NODE_KINDS)} (or backlog), got {kind!r}")
        return None
    return str(kind)


def check_node(problems: Problems, raw: Any, index: int, seen: set[str]) -> NodeSpec | None:
    """Entry `index` of `nodes` (its id added to `seen`), or None when it cannot be described."""
    if not isinstance(raw, dict):
        problems.error(f"nodes[{index}]", "must be a mapping")
        return None
    node_id = raw.get("id")
    if not isinstance(node_id, str) or not ID_RE.match(node_id):
        problems.error(f"nodes[{index}]", f"id: must match {ID_RE.pattern}, got {node_id!r}")
        return None
    where = f"node '{node_id}'"
    if node_id in seen:
        problems.error(where, "duplicate id")
    seen.add(node_id)
    data = canonical_node(problems, raw, where, node_id)
    kind = _kind_of(problems, where, data)
    if kind is None:
        return None
    problems.check_keys(where, data, {"id", "kind"} | NODE_KEYS[kind], NODE_HINTS)
    if kind == "const":
        _check_const(problems, where, data)
    elif kind == "expr":
        _check_expr(problems, where, data)
    elif kind == "pmf":
        pmf = _check_pmf(problems, where, node_id, data.get("pmf"))
        if pmf is not None:
            data["pmf"] = pmf
            if pmf.get("sample") and "profile" in data:
                problems.error(where, "profile shapes a pmf's expected value: drop sample or profile")
    elif kind == "serviceWithBuffer":
        data["dispatchSchedule"] = _check_buffer(problems, where, data)
    elif kind == "router":
        router = _check_router(problems, where, node_id, data)
        if router is None:
            return None
        data = router
    return NodeSpec(node_id, kind, index, data)
