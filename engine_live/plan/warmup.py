"""Warming up the compiled kernels (`flowtime serve` does it in a background thread at start).

Evaluation runs on the service's event loop: the first use of a numba kernel in a process imports
numba and compiles the kernel or loads it from the disk cache (0.2–1 s), which would stall every
run once. `warm_up` pays that before the first run needs it: it switches the queue recurrence to
its compiled form and evaluates a small model with classes and a queue, so every kernel is compiled
for the argument types real runs use. Results are the same bits with or without it.
"""

from __future__ import annotations

from engine_live.model.build import load_graph
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch
from engine_live.plan.queue_kernel import use_compiled_steps

_MODEL = {
    "grid": {"bins": 4, "binSize": 5, "binUnit": "minutes"},
    "nodes": [
        {"id": "a", "kind": "const", "values": [3, 1, 4, 1]},
        {"id": "b", "kind": "const", "values": [5, 9, 2, 6]},
        {"id": "cap", "kind": "const", "values": [4, 4, 4, 4]},
        {"id": "s", "kind": "expr", "expr": "a + 0.5 * b"},
        {"id": "m", "kind": "expr", "expr": "MIN(s, SHIFT(s, 1) + a)"},
        {"id": "q", "kind": "serviceWithBuffer", "inflow": "s", "outflow": "cap"},
    ],
    "classes": [{"id": "X"}, {"id": "Y"}],
    "traffic": {
        "arrivals": [
            {"nodeId": "a", "classId": "X", "pattern": {"kind": "constant", "ratePerBin": 1}},
            {"nodeId": "b", "classId": "Y", "pattern": {"kind": "constant", "ratePerBin": 1}},
        ]
    },
}


def warm_up() -> None:
    """Compile (or load) every kernel, and use the compiled queue recurrence from now on."""
    use_compiled_steps()
    evaluate_batch(compile_model(load_graph(_MODEL)))
