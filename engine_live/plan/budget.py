"""The cell budget: how many series × bins one whole-grid evaluation may allocate (issue 12 #6).

A batch run, an overlay, `/v1/validate` and `/v1/graph` evaluate (or would evaluate) a model over
its whole grid in one `rows × bins` float64 matrix. A small model text can ask for a huge matrix
(10,001 series × 10^6 bins is 74.5 GiB), so the plan's size is checked against the service's
`max_batch_cells` before anything of that size is allocated. Live runs have their own bound
(`max_live_bytes`).
"""

from __future__ import annotations

from engine_live.errors import TooLargeError
from engine_live.plan.compiler import Plan

DEFAULT_MAX_CELLS = 50_000_000
"""The default budget: 50 million cells, 400 MB of float64 for the evaluation matrix."""


def plan_cells(plan: Plan, bins: int) -> int:
    """The cells a whole-grid evaluation of `plan` allocates: one row per series."""
    return plan.n_rows * bins


def check_cells(plan: Plan, bins: int | None, max_cells: int | None) -> None:
    """Raise `TooLargeError` (413 `too_large`, naming the limit) when the plan is over the budget."""
    if max_cells is None or bins is None:
        return
    cells = plan_cells(plan, bins)
    if cells > max_cells:
        raise TooLargeError(
            f"the model needs {cells:,} cells ({plan.n_rows:,} series × {bins:,} bins), "
            f"over the limit of {max_cells:,} (setting max_batch_cells)",
            limit=max_cells,
            setting="max_batch_cells",
            cells=cells,
        )
