"""Capture and export benchmark (issue 5): a 288-bin × 50-node run vs its capture and export.

Target: capture and export each take no longer than the run itself (evaluate + write artifacts)
and stay under 250 MB RSS. Each phase runs in its own subprocess, so peak RSS is per phase.
Not part of the test run.

    python bench/capture_export_bench.py [--nodes 50] [--bins 288] [--repeat 5]
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


def model_text(nodes: int, bins: int) -> str:
    """A chain of services: each one's arrivals are the previous one's served plus some demand."""
    lines = [
        "schemaVersion: 1",
        f'grid: {{bins: {bins}, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}',
        "nodes:",
    ]
    topo = []
    for i in range(nodes):
        feed = f"served_{i - 1} * 0.9 + " if i else ""
        lines += [
            f'  - {{id: arrivals_{i}, kind: expr, expr: "{feed}80 + 20 * PULSE({3 + i % 7}) + {i % 5} * 0.1"}}',
            f'  - {{id: capacity_{i}, kind: expr, expr: "120 + 10 * PULSE(12, {i % 12})"}}',
            f'  - {{id: served_{i}, kind: expr, expr: "MIN(arrivals_{i}, capacity_{i})"}}',
            f'  - {{id: errors_{i}, kind: expr, expr: "(arrivals_{i} - served_{i}) * 0.25"}}',
        ]
        topo += [
            f"    - id: Svc{i}",
            "      kind: service",
            f"      semantics: {{arrivals: arrivals_{i}, served: served_{i}, capacity: capacity_{i},"
            f" errors: errors_{i}}}",
        ]
    return "\n".join([*lines, "topology:", "  nodes:", *topo, ""])


def phase(name: str, work: Path, repeat: int) -> dict[str, float]:
    from engine_live.plan.batch_run import run_model
    from snapshot_writer.artifacts import write_run_artifacts
    from snapshot_writer.capture import capture_run
    from snapshot_writer.exports import write_exports

    run_dir = work / "run"
    times = []
    for k in range(repeat):
        started = time.perf_counter()
        if name == "run":
            run = run_model((work / "model.yaml").read_text(), created_utc="2025-10-08T00:00:00Z")
            write_run_artifacts(run.result, run_dir)
        elif name == "capture":
            capture_run(run_dir, work / f"bundle{k}")
        else:
            write_exports(run_dir)
        times.append(time.perf_counter() - started)
    return {
        "first_s": times[0],
        "best_s": min(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--bins", type=int, default=288)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args.phase, Path(args.work), args.repeat)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "model.yaml").write_text(model_text(args.nodes, args.bins))
        results = {}
        for name in ("run", "capture", "export"):
            out = subprocess.run(
                [sys.executable, __file__, "--phase", name, "--work", str(work), "--repeat", str(args.repeat)],
                check=True,
                capture_output=True,
                text=True,
            )
            results[name] = json.loads(out.stdout)
        bundle = sum(p.stat().st_size for p in (work / "bundle0").iterdir())
        export = {p.name: p.stat().st_size for p in (work / "run" / "export").iterdir()}
    run_s = results["run"]["best_s"]
    print(f"{args.nodes} nodes × {args.bins} bins (best of {args.repeat}; each phase in its own process)")
    for name, r in results.items():
        ratio = r["best_s"] / run_s
        print(
            f"  {name:8s} best {r['best_s'] * 1e3:8.1f} ms  first {r['first_s'] * 1e3:8.1f} ms  "
            f"{ratio:5.2f}× run  peak RSS {r['peak_rss_mb']:6.1f} MB"
        )
    print(f"  bundle {bundle / 1e3:.0f} kB; export files (bytes): {export}")
    ok = all(results[p]["best_s"] <= run_s and results[p]["peak_rss_mb"] < 250 for p in ("capture", "export"))
    print("  target (≤ run time, < 250 MB):", "met" if ok else "NOT met")


if __name__ == "__main__":
    main()
