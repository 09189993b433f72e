"""Run folders on disk (compat_api.run_store): completeness, caches, gaps, filters, paging."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import orjson
import pytest
from compat_runs_support import GOLDEN_MODEL

from compat_api.run_store import RunStore, filter_runs, gap_masks, paginate
from compat_api.state_view import state_body
from engine_live.errors import InvalidRequestError, NotFoundError
from engine_live.model.grid import Grid
from engine_live.plan.batch_run import run_model
from snapshot_writer.artifacts import write_run_artifacts


def write_run(runs: Path, model: str = GOLDEN_MODEL, run_id: str | None = None) -> str:
    run = run_model(model, run_id=run_id)
    write_run_artifacts(run.result, runs / run.result.run_id, fsync=False)
    return run.result.run_id


def test_load_and_lru(tmp_path: Path) -> None:
    store = RunStore(tmp_path, cache_size=2)
    ids = [write_run(tmp_path, run_id=f"r{i}") for i in range(3)]
    loaded = store.load("r0")
    np.testing.assert_array_equal(loaded.series["served"], [10, 20, 25, 25])
    assert store.load("r0") is loaded  # cached
    store.load("r1")
    store.load("r2")  # evicts r0
    assert store.load("r0") is not loaded
    assert len(store._loaded) == 2
    # a rewritten folder (new manifest) is read again
    again = store.load("r0")
    manifest = tmp_path / "r0" / "manifest.json"
    st = manifest.stat()
    os.utime(manifest, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert store.load("r0") is not again
    assert sorted(s["runId"] for s in store.summaries()) == ids


def test_incomplete_and_bad_ids(tmp_path: Path) -> None:
    store = RunStore(tmp_path)
    write_run(tmp_path, run_id="ok")
    (tmp_path / "ok" / "manifest.json").unlink()
    for rid in ("ok", "..", "a/b", "x" * 129, ""):
        with pytest.raises(NotFoundError):
            store.run_dir(rid)
    assert store.summaries() == []
    assert RunStore(tmp_path / "absent").summaries() == []


def test_gap_masks_from_data_gap_warnings() -> None:
    run_json = {
        "warnings": [
            {"code": "data_gap", "nodeId": "Svc", "bins": [1, 3, 9]},
            {"code": "nan_detected", "nodeId": "Q", "bins": [0]},
            {"code": "data_gap", "nodeId": None, "bins": [0]},
        ]
    }
    masks = gap_masks(run_json, Grid(4, 5, "minutes"))
    assert list(masks) == ["Svc"]
    assert masks["Svc"].tolist() == [False, True, False, True]


def test_finished_run_state_shows_gaps(tmp_path: Path) -> None:
    rid = write_run(tmp_path, run_id="g")
    run_json_path = tmp_path / rid / "run.json"
    run_json = orjson.loads(run_json_path.read_bytes())
    run_json["warnings"] = [{"code": "data_gap", "nodeId": "Q", "bins": [2], "count": 1}]
    run_json_path.write_bytes(orjson.dumps(run_json))
    src = RunStore(tmp_path).load(rid).source()
    body = state_body(src, 2)
    q = next(n for n in body["nodes"] if n["id"] == "Q")
    assert (q["derived"]["color"], q["derived"]["colorReason"]) == ("gray", "data_gap")
    assert body["dataQuality"]["complete"] is False


def test_filter_and_paginate() -> None:
    items = [
        {"runId": "a", "mode": "simulation", "status": "completed", "createdUtc": "2025-01-01T00:00:00Z"},
        {
            "runId": "b",
            "mode": "overlay",
            "status": "completed",
            "createdUtc": "2025-01-02T00:00:00Z",
            "templateId": "t",
        },
        {"runId": "c", "mode": "live", "status": "live", "createdUtc": None},
    ]
    assert [r["runId"] for r in filter_runs(items)] == ["b", "a", "c"]
    assert [r["runId"] for r in filter_runs(items, template_id="t")] == ["b"]
    assert [r["runId"] for r in filter_runs(items, created_after="2025-01-01T00:00:00Z")] == ["b"]
    with pytest.raises(InvalidRequestError):
        filter_runs(items, created_after="2025-01-01")
    assert paginate(list(range(5)), 3, 2) == {"items": [4], "total": 5, "page": 3, "pageSize": 2}  # type: ignore[arg-type]
    assert paginate([], 9, 2)["items"] == []
