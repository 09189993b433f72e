"""A finished class run for the export and capture tests: upstream's `router-mixed` fixture (SPEC §14,
docs/classes.md) with a topology and one class-less series.

Hand-computed: total_arrivals [100, 50, 0] splits 40 : 60 into Alpha [40, 20, 0] and Beta [60, 30, 0];
the class route gives airport = Alpha = [40, 20, 0] (Beta 0); the rest is split by weight, all Beta:
general = 0.75 · [60, 30, 0] = [45, 22.5, 0], overflow_target = [15, 7.5, 0]. `odd` carries no class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine_live.plan.batch_run import run_model
from snapshot_writer.artifacts import write_run_artifacts

CREATED = "2025-10-08T12:00:00Z"
ROUTER_MIXED = """\
schemaVersion: 1
grid: {bins: 3, binSize: 60, binUnit: minutes, start: "2025-01-01T00:00:00Z"}
nodes:
  - {id: total_arrivals, kind: const, values: [100, 50, 0]}
  - id: splitter
    kind: router
    router:
      inputs: {queue: total_arrivals}
      routes:
        - {target: airport, classes: [Alpha]}
        - {target: general, weight: 0.75}
        - {target: overflow_target, weight: 0.25}
  - {id: odd, kind: const, values: [1, 2, 3]}
classes: [{id: Alpha}, {id: Beta}]
traffic:
  arrivals:
    - {nodeId: total_arrivals, classId: Alpha, pattern: {kind: const, ratePerBin: 40}}
    - {nodeId: total_arrivals, classId: Beta, pattern: {kind: const, ratePerBin: 60}}
topology:
  nodes:
    - {id: Split, kind: router, semantics: {arrivals: total_arrivals}}
    - {id: Airport, kind: sink, semantics: {arrivals: airport, served: airport}}
    - {id: General, kind: sink, semantics: {arrivals: general}}
"""
# (total, Alpha, Beta) per bin, by model series id
EXPECTED = {
    "total_arrivals": ([100, 50, 0], [40, 20, 0], [60, 30, 0]),
    "airport": ([40, 20, 0], [40, 20, 0], [0, 0, 0]),
    "general": ([45, 22.5, 0], [0, 0, 0], [45, 22.5, 0]),
    "overflow_target": ([15, 7.5, 0], [0, 0, 0], [15, 7.5, 0]),
}


def make_class_run(folder: Path) -> dict[str, np.ndarray]:
    """Write the run's artifacts into `folder`; returns its series by artifact id."""
    run = run_model(ROUTER_MIXED, created_utc=CREATED, run_id="run_classes")
    write_run_artifacts(run.result, folder, fsync=False)
    return {s.series_id: s.values for s in run.result.series}
