"""Regenerate the telemetry bundles shipped with the templates (SPEC §5): `bundles/<template-id>/`.

Deterministic: each template runs in simulation mode with its defaults (seeded PCG32 noise), and
every topology node's arrivals, served, errors and queueDepth become one CSV `bin_index,classId,value`
(a series shared by two nodes is written once, under the first). Chosen bins are left out to play
a collector outage (`data_gap` in the manifest). Run from the repository root:

    python compat_api/templates/make_bundles.py
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

from compat_api.templates.catalog import BUNDLE_DIR, instantiate, list_templates
from engine_live.plan.batch_run import run_model, scenario_hash

METRICS = ("arrivals", "served", "errors", "queueDepth")
CAPTURED_AT = "2025-10-08T00:00:00Z"
# template id -> (node id, metric or None for every metric) -> bins left out
GAPS: dict[str, dict[tuple[str, str | None], range]] = {
    "microservices": {("PaymentService", None): range(200, 204), ("CatalogService", "served"): range(90, 91)},
    "order-system": {("OrderService", "arrivals"): range(150, 152)},
    "http-service": {},
}


def number(v: float) -> str:
    """A value as CSV text (integral values without a decimal point)."""
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def gap_bins(template_id: str, node: str, metric: str) -> set[int]:
    """The bins left out of a node's metric series (the simulated collector outage)."""
    out: set[int] = set()
    for (gnode, gmetric), bins in GAPS.get(template_id, {}).items():
        if gnode == node and gmetric in (None, metric):
            out.update(bins)
    return out


def make_bundle(template_id: str, target: Path) -> None:
    """Write the template's telemetry bundle into `target`: one CSV per node metric and a manifest."""
    text, _, _ = instantiate(template_id, {}, data_dir=target.parent)
    run = run_model(text, deterministic_run_id=True, created_utc=CAPTURED_AT)
    grid = run.graph.grid
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    files, warnings, written = [], [], set()
    for binding in run.graph.topo:
        for metric in METRICS:
            sid = binding.fields.get(metric)
            if sid is None or sid in written:
                continue
            written.add(sid)
            values: np.ndarray = run.series(sid)
            gaps = gap_bins(template_id, binding.id, metric)
            rows = [f"{i},DEFAULT,{number(v)}" for i, v in enumerate(values) if i not in gaps]
            body = ("bin_index,classId,value\n" + "\n".join(rows) + "\n").encode()
            name = f"{binding.id}_{metric}.csv"
            (target / name).write_bytes(body)
            files.append(
                {
                    "nodeId": binding.id,
                    "metric": metric,
                    "path": name,
                    "classId": "DEFAULT",
                    "points": len(rows),
                    "hash": "sha256:" + hashlib.sha256(body).hexdigest(),
                }
            )
            if gaps:
                warnings.append(
                    {
                        "code": "data_gap",
                        "severity": "warning",
                        "nodeId": binding.id,
                        "metric": metric,
                        "bins": sorted(gaps),
                        "message": f"{len(gaps)} bins missing (collector outage)",
                    }
                )
    bins = grid.bins or 0
    manifest = {
        "schemaVersion": 2,
        "window": {"startTimeUtc": grid.start, "durationMinutes": bins * grid.bin_minutes},
        "grid": grid.to_wire(),
        "files": files,
        "warnings": warnings,
        "provenance": {
            "runId": run.result.run_id,
            "scenarioHash": scenario_hash(run.result.spec_text, run.result.seed),
            "capturedAtUtc": CAPTURED_AT,
            "templateId": template_id,
            "generator": "compat_api/templates/make_bundles.py",
        },
    }
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def main() -> None:
    """Regenerate the bundle of every template."""
    for template in list_templates():
        make_bundle(template.id, BUNDLE_DIR / template.id)
        print(f"wrote {BUNDLE_DIR / template.id}")


if __name__ == "__main__":
    main()
