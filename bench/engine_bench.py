"""Engine core benchmark (issue: engine core). Not part of the test run.

Generates the dag, dagq (--queue-frac 0.1) and chain models with ../shared/bench/gen_models.py and
prints parse, build, compile, evaluate (first, and again: "warm", without one-time costs such as
numba's import) and artifact-write times, bin-by-bin cost and peak RSS.
Each model runs in its own subprocess so peak RSS is per model.

    python bench/engine_bench.py [--sizes 1000,10000] [--bins 8640] [--shapes dag,dagq,chain]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GEN = Path(__file__).resolve().parents[1].parent / "shared" / "bench" / "gen_models.py"


def measure(model: Path, out_dir: Path, live_bins: int) -> dict[str, float]:
    import numpy as np

    from engine_live.model.build import build_model
    from engine_live.model.document import load_model
    from engine_live.plan.batch_run import collect_warnings
    from engine_live.plan.compiler import compile_model
    from engine_live.plan.evaluator import evaluate_batch, evaluate_range

    text = model.read_text()
    t0 = time.perf_counter()
    doc = load_model(text)
    t1 = time.perf_counter()
    graph = build_model(doc)
    t2 = time.perf_counter()
    plan = compile_model(graph)
    t3 = time.perf_counter()
    V = evaluate_batch(plan)
    t4 = time.perf_counter()
    del V  # again, in memory the process has mapped already: without one-time costs (first-touch page
    t_warm = time.perf_counter()  # faults of a fresh process, numba's import and kernel load)
    V = evaluate_batch(plan)
    warm = time.perf_counter() - t_warm
    w0 = time.perf_counter()
    collect_warnings(graph, plan, V)
    t5 = time.perf_counter()
    warnings_s = t5 - w0
    W = np.zeros((plan.n_rows, live_bins))
    for t in range(live_bins):
        evaluate_range(plan, W, 0, t, t + 1)
    t6 = time.perf_counter()
    run_dir = out_dir / "run"
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "compat_api.cli", "run", str(model), "--out", str(run_dir)],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    cli = time.perf_counter() - started
    return {
        "parse_s": t1 - t0,
        "build_s": t2 - t1,
        "compile_s": t3 - t2,
        "evaluate_s": t4 - t3,
        "evaluate_warm_s": warm,
        "warnings_s": warnings_s,
        "live_ms_per_bin": (t6 - t5) / live_bins * 1e3,
        "flowtime_run_s": cli,
        "stages": len(plan.stages),
        "rows": plan.n_rows,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--bins", type=int, default=8640)
    ap.add_argument("--shapes", default="dag,dagq,chain")
    ap.add_argument("--live-bins", type=int, default=200)
    ap.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(Path(args.one[0]), Path(args.one[1]), args.live_bins)))
        return
    print(
        f"{'model':<22}{'parse':>8}{'build':>8}{'compile':>8}{'eval':>8}{'warm':>8}{'warn':>8}{'live ms/bin':>12}"
        f"{'run (cli)':>10}{'RSS MB':>9}"
    )
    for shape in args.shapes.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                model = Path(tmp) / "m.yaml"
                gen = [
                    "--shape",
                    "dag" if shape == "dagq" else shape,
                    "--nodes",
                    str(n),
                    "--bins",
                    str(args.bins),
                    "--seed",
                    "1",
                    "-o",
                    str(model),
                ]
                if shape == "dagq":
                    gen += ["--queue-frac", "0.1"]
                subprocess.run([sys.executable, str(GEN), *gen], check=True, stderr=subprocess.DEVNULL)
                out = subprocess.run(
                    [sys.executable, __file__, "--one", str(model), tmp, "--live-bins", str(args.live_bins)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                m = json.loads(out.strip().splitlines()[-1])
                print(
                    f"{shape + ' ' + str(n) + 'x' + str(args.bins):<22}{m['parse_s']:>8.3f}{m['build_s']:>8.3f}"
                    f"{m['compile_s']:>8.3f}{m['evaluate_s']:>8.3f}{m['evaluate_warm_s']:>8.3f}{m['warnings_s']:>8.3f}"
                    f"{m['live_ms_per_bin']:>12.2f}{m['flowtime_run_s']:>10.2f}{m['peak_rss_mb']:>9.0f}"
                )


if __name__ == "__main__":
    main()
