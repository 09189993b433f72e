"""Class cost benchmark (issue 14, SPEC §14). Not part of the test run.

Generates the dagq 1,000-node model (../shared/bench/gen_models.py, seed 1), adds 3 classes with
arrivals on every const source (rates 1, 2, 3), and times `evaluate_batch` of both models (best of
`--repeat`) and the live per-bin `evaluate_range`.

    python bench/class_bench.py [--nodes 1000] [--bins 8640] [--repeat 3] [--queues numpy|compiled]

`--queues` picks the class-less queue recurrence for both models alike: `compiled` (numba, what a
long-lived server uses) or `numpy` (`queue_kernel.queue_series`, what a short CLI run of a small
model uses); the class stages are compiled either way.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GEN = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "gen_models.py"


def with_classes(data: dict[str, Any]) -> dict[str, Any]:
    """The model with 3 classes whose arrivals split every const source 1:2:3."""
    sources = [node["id"] for node in data["nodes"] if node.get("kind") == "const"]
    arrivals = [
        {"nodeId": sid, "classId": cid, "pattern": {"kind": "constant", "ratePerBin": rate}}
        for sid in sources
        for cid, rate in (("Gold", 1), ("Silver", 2), ("Bronze", 3))
    ]
    return {**data, "classes": [{"id": c} for c in ("Gold", "Silver", "Bronze")], "traffic": {"arrivals": arrivals}}


def timed(data: dict[str, Any], repeat: int, live_bins: int) -> tuple[float, float, int]:
    """(best batch evaluate seconds, ms per live bin, rows) of one model."""
    import numpy as np

    from engine_live.model.build import load_graph
    from engine_live.plan.compiler import compile_model
    from engine_live.plan.evaluator import evaluate_batch, evaluate_range

    plan = compile_model(load_graph(data))
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        V = evaluate_batch(plan)
        best = min(best, time.perf_counter() - start)
    W = np.zeros_like(V[:, : live_bins + 1])
    start = time.perf_counter()
    for t in range(live_bins):
        evaluate_range(plan, W, 0, t, t + 1)
    return best, (time.perf_counter() - start) / live_bins * 1000, plan.n_rows


def main() -> None:
    import yaml

    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--bins", type=int, default=8640)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--live-bins", type=int, default=200)
    parser.add_argument("--queues", choices=("numpy", "compiled"), default="compiled")
    args = parser.parse_args()
    import engine_live.plan.stages as stages

    if args.queues == "numpy":
        stages.compiled_steps = lambda cells: None  # type: ignore[assignment]
    else:
        from engine_live.plan.queue_kernel import use_compiled_steps

        use_compiled_steps()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.yaml"
        cmd = [sys.executable, str(GEN), "--shape", "dag", "--nodes", str(args.nodes), "--bins", str(args.bins)]
        subprocess.run([*cmd, "--queue-frac", "0.1", "--seed", "1", "-o", str(path)], check=True)
        data = yaml.safe_load(path.read_text())
    plain = timed(data, args.repeat, args.live_bins)
    classed = timed(with_classes(data), args.repeat, args.live_bins)
    print(f"class-less: evaluate {plain[0]:.3f} s, live {plain[1]:.2f} ms/bin, {plain[2]} rows")
    print(f"3 classes : evaluate {classed[0]:.3f} s, live {classed[1]:.2f} ms/bin, {classed[2]} rows")
    print(f"ratio     : evaluate {classed[0] / plain[0]:.2f}x, live {classed[1] / plain[1]:.2f}x")


if __name__ == "__main__":
    main()
