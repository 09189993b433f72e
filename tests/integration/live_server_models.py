"""Models and telemetry for the live-server integration tests, crash test and ingest bench.

`GroupModel(groups, bins, style)` builds a topology model of `groups` service → queue pairs, each
fed by three telemetry series (arrivals, capacity, the queue's drain) and read by expressions that
exercise SHIFT with `initial`, CONV, ROLLING_MEAN / ROLLING_MAX, division and cross-group terms:

- style "consts": the telemetry series are top-level nodes `arr_i`, `cap_i`, `drain_i`; the live
  model declares them `source: telemetry`, `batch_text(inputs)` gives the same model with the
  inputs as `values` (for `flowtime run`), so the artifact series ids are the same;
- style "topo": the telemetry comes from topology semantics `telemetry` (hidden series
  `Svc_i.arrivals`, `Svc_i.capacity`, `Svc_i.errors`, `Q_i.served`); compare with
  `run_model(text, telemetry=...)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np

START = "2025-10-07T00:00:00Z"


@dataclass(frozen=True)
class GroupModel:
    groups: int
    bins: int | None
    style: Literal["consts", "topo"] = "consts"
    bin_minutes: int = 5

    # -- names ----------------------------------------------------------------------------------
    def arr(self, i: int) -> str:
        return f"arr_{i}" if self.style == "consts" else f"Svc_{i}.arrivals"

    def cap(self, i: int) -> str:
        return f"cap_{i}" if self.style == "consts" else f"Svc_{i}.capacity"

    def drain(self, i: int) -> str:
        return f"drain_{i}" if self.style == "consts" else f"Q_{i}.served"

    def telemetry_ids(self) -> list[str]:
        out: list[str] = []
        for i in range(self.groups):
            out += [self.arr(i), self.cap(i), self.drain(i)]
            if self.style == "topo":
                out.append(f"Svc_{i}.errors")
        return out

    # -- text -----------------------------------------------------------------------------------
    def _text(self, inputs: dict[str, np.ndarray] | None) -> str:
        bins = f"bins: {self.bins}, " if self.bins is not None else ""
        lines = [f'grid: {{{bins}binSize: {self.bin_minutes}, binUnit: minutes, start: "{START}"}}', "nodes:"]
        for i in range(self.groups):
            a, c, d = self.arr(i), self.cap(i), self.drain(i)
            if self.style == "consts":
                for sid in (a, c, d):
                    if inputs is None:
                        lines.append(f"  - {{id: {sid}, kind: const, source: telemetry}}")
                    else:
                        vals = ", ".join(repr(float(v)) for v in inputs[sid])
                        lines.append(f"  - {{id: {sid}, kind: const, values: [{vals}]}}")
            prev = f"served_{i - 1}" if i else "0"
            lines += [
                f'  - {{id: served_{i}, kind: expr, expr: "MIN({a}, {c})"}}',
                f'  - {{id: backlog_{i}, kind: expr, expr: "MAX(0, SHIFT(backlog_{i}, 1) + {a} - served_{i})", '
                f"initial: {i % 4}}}",
                f'  - {{id: smooth_{i}, kind: expr, expr: "ROLLING_MEAN(served_{i}, 4) + CONV({a}, [0.5, 0.3, 0.2])"}}',
                f'  - {{id: ratio_{i}, kind: expr, expr: "served_{i} / {c} + {d} / 7"}}',
                f'  - {{id: peak_{i}, kind: expr, expr: "ROLLING_MAX(backlog_{i}, 6) * 0.1 + SHIFT(smooth_{i}, 2)"}}',
                f'  - {{id: mix_{i}, kind: expr, expr: "0.3 * {prev} + 0.7 * served_{i} - {d} * 0.01"}}',
            ]
        lines += ["topology:", "  nodes:"]
        for i in range(self.groups):
            if self.style == "consts":
                sem = f"arrivals: {self.arr(i)}, served: served_{i}, capacity: {self.cap(i)}"
                qsem = f"arrivals: served_{i}, served: {self.drain(i)}"
            else:
                sem = f"arrivals: telemetry, served: served_{i}, capacity: telemetry, errors: telemetry"
                qsem = f"arrivals: served_{i}, served: telemetry"
            lines.append(f"    - {{id: Svc_{i}, kind: service, semantics: {{{sem}}}}}")
            lines.append(
                f"    - {{id: Q_{i}, kind: serviceWithBuffer, semantics: {{{qsem}, slaMin: 10}}, "
                f"initialCondition: {{queueDepth: {i % 3}}}}}"
            )
        lines.append("  edges:")
        for i in range(self.groups):
            lines.append(f"    - {{from: Svc_{i}, to: Q_{i}}}")
        return "\n".join(lines) + "\n"

    @property
    def live_text(self) -> str:
        return self._text(None)

    def batch_text(self, inputs: dict[str, np.ndarray]) -> str:
        assert self.style == "consts"
        return self._text(inputs)

    # -- data -----------------------------------------------------------------------------------
    def inputs(self, bins: int, seed: int) -> dict[str, np.ndarray]:
        """Telemetry values with at most 3 decimals (exact JSON/YAML round trips)."""
        rng = np.random.default_rng(seed)
        out: dict[str, np.ndarray] = {}
        for i in range(self.groups):
            out[self.arr(i)] = np.round(rng.uniform(20, 180, bins), 3)
            out[self.cap(i)] = np.round(rng.uniform(60, 160, bins), 2)
            out[self.drain(i)] = np.round(rng.uniform(0, 120, bins), 1)
            if self.style == "topo":
                out[f"Svc_{i}.errors"] = rng.integers(0, 5, bins).astype(np.float64)
        return out

    def node_frames(self, b: int, values: dict[str, float], *, use_ts: bool = False) -> list[dict[str, Any]]:
        """One bin's values as node frames (Svc_i: arrivals + capacity [+ errors]; Q_i: served)."""
        where: dict[str, Any] = {"ts": self.ts(b)} if use_ts else {"bin": b}
        frames: list[dict[str, Any]] = []
        for i in range(self.groups):
            svc = {**where, "node": f"Svc_{i}", "arrivals": values[self.arr(i)], "capacity": values[self.cap(i)]}
            if self.style == "topo":
                svc["errors"] = values[f"Svc_{i}.errors"]
            frames.append(svc)
            frames.append({**where, "node": f"Q_{i}", "served": values[self.drain(i)]})
        return frames

    def ts(self, b: int) -> str:
        t = datetime(2025, 10, 7, tzinfo=UTC) + timedelta(minutes=b * self.bin_minutes)
        return t.strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["START", "GroupModel"]
