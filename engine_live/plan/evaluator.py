"""Batch evaluation of a compiled plan: the whole grid at once, every stage over all bins."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from engine_live.plan.compiler import Plan


def evaluate_range(plan: Plan, V: np.ndarray, base: int, t0: int, t1: int) -> None:
    """Evaluate bins [t0, t1) in place. Telemetry rows must already hold their inputs."""
    with np.errstate(all="ignore"):
        for stage in plan.stages:
            stage.run(V, base, t0, t1)


def zeroed(shape: tuple[int, int]) -> np.ndarray:
    """A zero matrix written at once: `np.empty` gets numpy's allocator (transparent huge pages on
    Linux) and `fill` maps it in one sweep. `np.zeros` gets calloc'ed 4 KiB pages that the stages
    then fault in one by one, scattered: 2.1 s of a 2.4 s evaluation of an 870 MB matrix, measured."""
    V = np.empty(shape)
    V.fill(0.0)
    return V


def evaluate_batch(
    plan: Plan, telemetry: Mapping[str, np.ndarray] | None = None, bins: int | None = None
) -> np.ndarray:
    """Evaluate the whole grid; returns the matrix V (rows = plan.names, columns = bins)."""
    n = bins if bins is not None else plan.graph.grid.bins
    if n is None:
        raise ValueError("an open-ended model needs an explicit number of bins")
    V = zeroed((plan.n_rows, n))
    for sid, values in (telemetry or {}).items():
        given = min(n, len(values))
        V[plan.row[sid], :given] = values[:given]
    evaluate_range(plan, V, 0, 0, n)
    return V
