"""Per-bin cost of DerivedHooks (derived + warnings + wire) on a 1,000-node topology. Not part of the tests.

Synthesizes N topology nodes: every node has a telemetry `arrivals` and `served = MIN(arrivals, 12)`;
every 10th node is a serviceWithBuffer (a synthesized queue). Two scenarios:
- quiet: every node has a capacity (`15`), clean data: warnings are rare;
- noisy: half the nodes infer capacity (so ~450 keep a growing `capacity_inferred_low`, whose count
  changes — an `add` — every bin), every 7th node has a telemetry `queueDepth` (conservation and
  backlog checks), 0.2 % of values are negative and 0.1 % missing (data gaps).
Feeds BINS bins in order (one record per bin) and times the hook calls LiveRun makes per published
bin, then the whole `LiveRun.apply` with and without the hooks, and a correction 20 bins back.

    python bench/live_hooks_bench.py [--nodes 1000] [--bins 600]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

from engine_live.derived.live_hooks import DerivedHooks
from engine_live.model.build import load_graph
from engine_live.plan.compiler import Plan, compile_model
from engine_live.state.frame_batch import FrameBatch
from engine_live.state.live_run import BinHooks, LiveRun


def model(n: int, bins: int, quiet: bool = False) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = []
    topo: list[dict[str, Any]] = []
    for i in range(n):
        nodes += [
            {"id": f"a{i}", "kind": "const", "source": "telemetry"},
            {"id": f"s{i}", "kind": "expr", "expr": f"MIN(a{i}, 12)"},
        ]
        sem: dict[str, Any] = {"arrivals": f"a{i}", "served": f"s{i}"}
        if quiet or i % 2 == 0:
            nodes.append({"id": f"c{i}", "kind": "expr", "expr": "15"})
            sem["capacity"] = f"c{i}"
        if i % 7 == 0 and i % 10 and not quiet:
            sem["queueDepth"] = "telemetry"
        topo.append({"id": f"N{i}", "kind": "serviceWithBuffer" if i % 10 == 0 else "service", "semantics": sem})
    return {
        "grid": {"bins": bins, "binSize": 5, "binUnit": "minutes", "start": "2025-10-07T00:00:00Z"},
        "nodes": nodes,
        "topology": {"nodes": topo},
    }


class TimedHooks(DerivedHooks):
    def __init__(self, plan: Plan) -> None:
        super().__init__(plan)
        self.spent: dict[int, float] = {}  # bin → wall seconds in the hooks
        self.cpu: dict[int, float] = {}  # bin → CPU seconds of this thread (unaffected by a busy machine)
        self._cpu0 = 0.0

    def _add(self, t: int, dt: float) -> None:
        self.spent[t] = self.spent.get(t, 0.0) + dt
        cpu = time.thread_time()
        self.cpu[t] = self.cpu.get(t, 0.0) + cpu - self._cpu0

    def wire(self, block: Any) -> Any:
        t, self._cpu0 = time.perf_counter(), time.thread_time()
        out = super().wire(block)
        self._add(-1, time.perf_counter() - t)
        return out

    def derived(self, run: LiveRun, t0: int, t1: int) -> Any:
        t, self._cpu0 = time.perf_counter(), time.thread_time()
        out = super().derived(run, t0, t1)
        self._add(t0, time.perf_counter() - t)
        return out

    def warnings(self, run: LiveRun, bin_index: int) -> Any:
        t, self._cpu0 = time.perf_counter(), time.thread_time()
        out = super().warnings(run, bin_index)
        self._add(bin_index, time.perf_counter() - t)
        return out


def feed(
    plan: Plan, hooks: BinHooks | None, bins: int, quiet: bool = False, seed: int = 1
) -> tuple[LiveRun, list[float], int]:
    run = LiveRun(plan, run_id="bench", epoch="e", hooks=hooks)
    run.start()
    rng = np.random.default_rng(seed)
    ids = run.telemetry_ids
    per_record: list[float] = []
    n_warn = 0
    for b in range(bins):
        vals = rng.uniform(0, 20, len(ids))
        keep = np.ones(len(ids), dtype=np.bool_)
        if not quiet:
            vals[rng.random(len(ids)) < 0.002] = -1.0
            keep = rng.random(len(ids)) > 0.001  # a few gaps, zero-filled after the grace bins
        frames = [(b, s, float(v)) for s, v, k in zip(ids, vals, keep, strict=True) if k]
        t = time.perf_counter()
        res = run.apply(FrameBatch.from_frames(frames))
        per_record.append(time.perf_counter() - t)
        n_warn += sum(e["type"] == "warning_update" for e in res.events)
    return run, per_record, n_warn


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.array(xs) * 1e6, q))


def scenario(name: str, n: int, bins: int, quiet: bool) -> None:
    plan = compile_model(load_graph(model(n, bins, quiet), live=True))
    print(f"[{name}] {n} topology nodes, {plan.n_rows} rows, {len(plan.telemetry_rows)} telemetry series")
    warm = bins // 10
    hooks = TimedHooks(plan)
    run, with_hooks, n_warn = feed(plan, hooks, bins, quiet)
    per_bin = [v for t, v in hooks.spent.items() if t >= warm]
    cpu = [v for t, v in hooks.cpu.items() if t >= warm]
    wire = hooks.spent.get(-1, 0.0) / bins
    print(
        f"  derived + warnings per bin: wall min {pct(per_bin, 0):.0f} µs, p50 {pct(per_bin, 50):.0f} µs, "
        f"p99 {pct(per_bin, 99):.0f} µs; CPU min {pct(cpu, 0):.0f} µs, p50 {pct(cpu, 50):.0f} µs, "
        f"p99 {pct(cpu, 99):.0f} µs; "
        f"wire rounding {wire * 1e6:.0f} µs/bin; {n_warn / bins:.1f} warning updates/bin, "
        f"{len(hooks.active())} active at the end"
    )
    _, without, _ = feed(plan, None, bins, quiet)
    print(
        f"  LiveRun.apply per bin (frames in → events out): with hooks p50 {pct(with_hooks[warm:], 50):.0f} µs "
        f"p99 {pct(with_hooks[warm:], 99):.0f} µs; without hooks p50 {pct(without[warm:], 50):.0f} µs "
        f"p99 {pct(without[warm:], 99):.0f} µs"
    )
    hooks.spent.clear()
    t = time.perf_counter()
    res = run.apply(FrameBatch.from_frames([(run.last_bin - 20, run.telemetry_ids[0], 99.0)]))
    dt = time.perf_counter() - t
    n_up = sum(e["type"] == "run_update" for e in res.events)
    print(
        f"  correction 20 bins back: {dt * 1e3:.1f} ms for {n_up} republished bins "
        f"(hooks {sum(hooks.spent.values()) * 1e3:.1f} ms)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--bins", type=int, default=600)
    args = ap.parse_args()
    scenario("quiet: every node has a capacity, clean data", args.nodes, args.bins, quiet=True)
    scenario(
        "noisy: half infer capacity (capacity_inferred_low on ~450 nodes), negatives, gaps",
        args.nodes,
        args.bins,
        quiet=False,
    )


if __name__ == "__main__":
    main()
