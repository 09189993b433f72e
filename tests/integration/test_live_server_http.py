"""Live runs over HTTP against a real `flowtime serve` subprocess on loopback (SPEC §6, §12.1, §12.2, §12.7).

- A 100-node topology model fed bin by bin (node and series frames, `bin` and `ts`, JSON arrays and
  NDJSON, duplicates and late corrections) closes into artifacts whose `series/*.csv` bytes and
  `series.parquet` values equal `flowtime run` of the same model with the inputs as consts; the
  same with topology `telemetry` semantics against `run_model(telemetry=...)`.
- Bad frames of every kind get their 4xx status and code and change nothing: the `/state/live` body,
  the run detail and the ingestion log are byte-identical afterwards.
- A full ingest queue answers 429 with Retry-After, and what it refused can be sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from live_server_models import GroupModel
from server_proc import ServerProcess

from engine_live.plan.batch_run import run_model
from snapshot_writer.artifact_reader import read_run_series
from snapshot_writer.artifacts import write_run_artifacts

pytestmark = pytest.mark.integration
BINS = 48
NDJSON = {"content-type": "application/x-ndjson"}  # writes must say what they send (docs/security.md)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path_factory.mktemp("live-http") / "data") as proc:
        yield proc


@pytest.fixture
def client(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30.0) as c:
        yield c


def ndjson(frames: list[dict[str, Any]]) -> bytes:
    return b"\n".join(orjson.dumps(f) for f in frames) + b"\n"


def create(client: httpx.Client, run_id: str, model: str, **options: Any) -> dict[str, Any]:
    r = client.post("/v1/runs", json={"mode": "live", "model": model, "options": {"runId": run_id, **options}})
    assert r.status_code == 202, r.text
    body: dict[str, Any] = r.json()
    return body


def post_bins(client: httpx.Client, run_id: str, body: bytes, expect: int = 202) -> dict[str, Any]:
    r = client.post(f"/v1/runs/{run_id}/bins", content=body, headers=NDJSON)
    assert r.status_code == expect, r.text
    out: dict[str, Any] = r.json()
    return out


def feed_bin_by_bin(
    client: httpx.Client, run_id: str, model: GroupModel, inputs: dict[str, np.ndarray], seed: int
) -> None:
    """Every bin in its own request(s), in mixed forms; a few bins are first sent wrong and corrected
    four bins later, a few are sent again in full (duplicates)."""
    rng = random.Random(seed)
    wrong_bins = {3, 11, 30}
    n = len(next(iter(inputs.values())))
    for b in range(n):
        values = {sid: float(v[b]) for sid, v in inputs.items()}
        if b in wrong_bins:
            values[model.arr(0)] += 1000.5
        frames = model.node_frames(b, values, use_ts=b % 4 == 1)
        if b % 5 == 2:  # the drains as series frames instead of node frames
            frames = [f for f in frames if not f["node"].startswith("Q_")]
            frames += [
                {"bin": b, "series": model.drain(i), "value": values[model.drain(i)], "runId": run_id}
                for i in range(model.groups)
            ]
        rng.shuffle(frames)
        n_values = sum(len(f) - 2 - ("runId" in f) for f in frames)
        body = orjson.dumps(frames) if b % 2 else ndjson(frames)
        res = post_bins(client, run_id, body)
        assert res["accepted"] == n_values and res["duplicates"] == 0 and res["corrected"] == 0, res
        assert res["watermark"] == b and res["lastBin"] in (b - 1, b), res  # evaluation may follow the ack
        if b - 4 in wrong_bins:  # the late correction of bin b-4 (one value)
            fix = {"bin": b - 4, "series": model.arr(0), "value": float(inputs[model.arr(0)][b - 4])}
            res = post_bins(client, run_id, orjson.dumps(fix))
            assert (res["accepted"], res["duplicates"], res["corrected"]) == (0, 0, 1), res
        if b % 16 == 5:  # the whole bin again: every value a duplicate
            again = model.node_frames(b, {sid: float(v[b]) for sid, v in inputs.items()})
            res = post_bins(client, run_id, ndjson(again))
            assert res["duplicates"] == sum(len(f) - 2 for f in again) and res["accepted"] == 0, res


def close(client: httpx.Client, run_id: str) -> dict[str, Any]:
    r = client.post(f"/v1/runs/{run_id}/close")
    assert r.status_code == 202, r.text
    detail = client.get(f"/v1/runs/{run_id}").json()
    assert detail["status"] == "completed", detail
    body: dict[str, Any] = detail
    return body


def assert_same_series_files(live_dir: Path, batch_dir: Path) -> None:
    live_csv = {p.name: p.read_bytes() for p in (live_dir / "series").glob("*.csv")}
    batch_csv = {p.name: p.read_bytes() for p in (batch_dir / "series").glob("*.csv")}
    assert live_csv and sorted(live_csv) == sorted(batch_csv)
    differ = [name for name in live_csv if live_csv[name] != batch_csv[name]]
    assert not differ, f"{len(differ)} series CSVs differ, e.g. {differ[:3]}"
    live = read_run_series(live_dir)
    batch = read_run_series(batch_dir)
    assert sorted(live) == sorted(batch)
    for sid, values in batch.items():
        assert live[sid].dtype == np.float64 and live[sid].tobytes() == values.tobytes(), sid


def test_bin_by_bin_equals_flowtime_run(client: httpx.Client, server: ServerProcess, tmp_path: Path) -> None:
    model = GroupModel(groups=10, bins=BINS, style="consts")  # 90 series nodes + 20 topology nodes
    inputs = model.inputs(BINS, seed=7)
    create(client, "http_consts", model.live_text)
    feed_bin_by_bin(client, "http_consts", model, inputs, seed=1)
    live = client.get("/v1/runs/http_consts/state/live").json()
    assert live["lastBin"] == BINS - 1 and live["revision"] == 3 and live["dataQuality"]["complete"], live
    detail = close(client, "http_consts")
    assert detail["lastBin"] == BINS - 1

    model_file = tmp_path / "batch.yaml"
    model_file.write_text(model.batch_text(inputs))
    out = tmp_path / "batch-run"
    done = subprocess.run(
        [sys.executable, "-m", "compat_api.cli", "run", str(model_file), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert_same_series_files(server.data_dir / "runs" / "http_consts", out)


def test_topology_telemetry_equals_run_model(client: httpx.Client, server: ServerProcess, tmp_path: Path) -> None:
    model = GroupModel(groups=12, bins=BINS, style="topo")  # 72 series + 24 topology nodes + 48 telemetry
    inputs = model.inputs(BINS, seed=8)
    create(client, "http_topo", model.live_text, graceBins=1)
    feed_bin_by_bin(client, "http_topo", model, inputs, seed=2)
    close(client, "http_topo")
    batch = run_model(model.live_text, telemetry=inputs)
    out = tmp_path / "batch-run"
    write_run_artifacts(batch.result, out)
    assert_same_series_files(server.data_dir / "runs" / "http_topo", out)


# -- bad frames ---------------------------------------------------------------------------------
def fingerprint(client: httpx.Client, server: ServerProcess, run_id: str) -> tuple[str, str, int]:
    state = client.get(f"/v1/runs/{run_id}/state/live")
    detail = client.get(f"/v1/runs/{run_id}")
    assert state.status_code == 200 and detail.status_code == 200
    log_size = (server.data_dir / "runs" / run_id / "live" / "ingest.log").stat().st_size
    return hashlib.sha256(state.content).hexdigest(), hashlib.sha256(detail.content).hexdigest(), log_size


def test_bad_frames_get_4xx_and_change_nothing(client: httpx.Client, server: ServerProcess) -> None:
    model = GroupModel(groups=2, bins=3000, style="consts")
    run = "http_bad"
    create(client, run, model.live_text, retentionBins=4)
    inputs = model.inputs(10, seed=3)
    for b in range(10):
        post_bins(client, run, ndjson(model.node_frames(b, {s: float(v[b]) for s, v in inputs.items()})))
    good = {"bin": 10, "series": "arr_0", "value": 5.0}
    cases: list[tuple[str, bytes, int, str]] = [
        ("malformed JSON", b'{"bin": 10, "series": "arr_0", ', 400, "malformed_body"),
        ("malformed array", b'[{"bin": 10, "series": "arr_0", "value": 1}', 400, "malformed_body"),
        ("malformed NDJSON line", ndjson([good]) + b"{oops}\n", 400, "malformed_body"),
        ("empty body", b"  \n", 400, "malformed_body"),
        ("NaN literal", b'{"bin": 10, "series": "arr_0", "value": NaN}', 400, "malformed_body"),
        ("not an object", b"[1, 2]", 422, "invalid_frame"),
        ("unknown node", orjson.dumps({"bin": 10, "node": "Nope", "arrivals": 1}), 422, "unknown_node"),
        ("unknown metric", orjson.dumps({"bin": 10, "node": "Svc_0", "latency": 1}), 422, "not_telemetry"),
        ("unknown series", orjson.dumps({"bin": 10, "series": "nope", "value": 1}), 422, "not_telemetry"),
        ("series not telemetry", orjson.dumps({"bin": 10, "series": "served_0", "value": 1}), 422, "not_telemetry"),
        ("metric not telemetry", orjson.dumps({"bin": 10, "node": "Svc_0", "served": 1}), 422, "not_telemetry"),
        ("node and series", orjson.dumps({**good, "node": "Svc_0"}), 422, "ambiguous_frame"),
        ("no values", orjson.dumps({"bin": 10, "node": "Svc_0"}), 422, "no_values"),
        ("missing bin", orjson.dumps({"series": "arr_0", "value": 1}), 422, "missing_bin"),
        ("negative bin", orjson.dumps({**good, "bin": -1}), 422, "invalid_bin"),
        ("float bin", orjson.dumps({**good, "bin": 10.0}), 422, "invalid_bin"),
        (
            "misaligned ts",
            orjson.dumps({"ts": "2025-10-07T00:51:00Z", "series": "arr_0", "value": 1}),
            422,
            "ts_not_aligned",
        ),
        (
            "ts not UTC",
            orjson.dumps({"ts": "2025-10-07T00:50:00+02:00", "series": "arr_0", "value": 1}),
            422,
            "ts_not_aligned",
        ),
        ("ts/bin mismatch", orjson.dumps({**good, "ts": model.ts(11)}), 422, "bin_ts_mismatch"),
        ("bin out of grid", orjson.dumps({**good, "bin": 3000}), 422, "bin_out_of_range"),
        ("too far ahead", orjson.dumps({**good, "bin": 9 + 1441}), 422, "bin_too_far_ahead"),
        ("null value", orjson.dumps({**good, "value": None}), 422, "invalid_value"),
        ("string value", orjson.dumps({**good, "value": "5"}), 422, "invalid_value"),
        ("bool value", orjson.dumps({"bin": 10, "node": "Svc_0", "arrivals": True}), 422, "invalid_value"),
        ("overflowing value", b'{"bin": 10, "series": "arr_0", "value": 1e999}', 400, "malformed_body"),
        ("missing value", orjson.dumps({"bin": 10, "series": "arr_0"}), 422, "invalid_value"),
        ("unknown field", orjson.dumps({**good, "unit": "rps"}), 422, "unknown_field"),
        ("runId mismatch", orjson.dumps({**good, "runId": "other"}), 422, "run_id_mismatch"),
        ("outside retention", orjson.dumps({**good, "bin": 2}), 409, "bin_outside_retention"),
        ("too many frames", ndjson([good] * 10_001), 413, "too_large"),
    ]
    # all-or-nothing: good frames first, the bad one last
    cases.append(("bad last frame", ndjson([good, {**good, "bin": 11}, {**good, "value": None}]), 422, "invalid_value"))
    cases.append(("retention, mixed", ndjson([good, {**good, "bin": 1, "value": 9.0}]), 409, "bin_outside_retention"))
    before = fingerprint(client, server, run)
    failures = []
    for name, body, status, code in cases:
        r = client.post(f"/v1/runs/{run}/bins", content=body, headers=NDJSON)
        err = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != status or err.get("error") != code or not err.get("message"):
            failures.append(f"{name}: {r.status_code} {r.text[:200]}")
        elif status == 422 and code not in ("invalid_frame",) and "frame" not in err:
            failures.append(f"{name}: 422 without the frame index: {err}")
        if fingerprint(client, server, run) != before:
            failures.append(f"{name}: the request changed the run")
            before = fingerprint(client, server, run)
    body_limit = b"[" + b" " * (16 * 1024 * 1024) + b"]"
    r = client.post(f"/v1/runs/{run}/bins", content=body_limit, headers=NDJSON)
    if r.status_code != 413 or r.json().get("error") != "too_large":
        failures.append(f"16 MiB body: {r.status_code} {r.text[:200]}")
    r = client.post("/v1/runs/no_such_run/bins", content=orjson.dumps(good), headers=NDJSON)
    if r.status_code != 404 or r.json().get("error") != "not_found":
        failures.append(f"unknown run: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    assert fingerprint(client, server, run) == before

    # the same run still takes good data
    res = post_bins(client, run, orjson.dumps(good))
    assert res["accepted"] == 1 and res["lastBin"] == 9 and res["watermark"] == 10


def test_closed_run_answers_409_and_changes_nothing(client: httpx.Client, server: ServerProcess) -> None:
    model = GroupModel(groups=1, bins=6, style="consts")
    create(client, "http_closed", model.live_text)
    inputs = model.inputs(6, seed=4)
    post_bins(client, "http_closed", ndjson(model.node_frames(0, {s: float(v[0]) for s, v in inputs.items()})))
    close(client, "http_closed")
    closed = fingerprint(client, server, "http_closed")
    for b in (1, 0):  # a new bin and a correction
        r = client.post(
            "/v1/runs/http_closed/bins", content=orjson.dumps({"bin": b, "series": "arr_0", "value": 1}), headers=NDJSON
        )
        assert r.status_code == 409 and r.json()["error"] == "run_closed", r.text
    r = client.post("/v1/runs/http_closed/close")  # a repeated close is a no-op
    assert r.status_code == 202 and r.json()["status"] == "completed"
    assert fingerprint(client, server, "http_closed") == closed


# -- backpressure -------------------------------------------------------------------------------
QUEUE_FRAMES = 600


async def _blast(base_url: str, run_id: str, bodies: list[bytes]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=base_url, timeout=60.0, limits=limits) as c:
        return await asyncio.gather(*(c.post(f"/v1/runs/{run_id}/bins", content=b, headers=NDJSON) for b in bodies))


def test_full_queue_answers_429_with_retry_after(tmp_path: Path) -> None:
    env = {"FLOWTIME_INGEST_QUEUE_FRAMES": str(QUEUE_FRAMES)}
    n_bins = 32
    model = GroupModel(groups=50, bins=n_bins, style="consts")  # 150 telemetry series
    inputs = model.inputs(n_bins, seed=5)
    # one bin per request: 150 values, so at most 4 requests fit in the queue at once
    bodies = [ndjson(model.node_frames(b, {s: float(v[b]) for s, v in inputs.items()})) for b in range(n_bins)]
    with ServerProcess(tmp_path / "data", env=env) as srv, httpx.Client(base_url=srv.base_url, timeout=30) as c:
        create(c, "bp", model.live_text)
        replies = asyncio.run(_blast(srv.base_url, "bp", bodies))
        refused = [b for b, r in enumerate(replies) if r.status_code == 429]
        assert refused, "no request was refused with 429"
        assert all(r.status_code in (202, 429) for r in replies), [r.text for r in replies if r.status_code >= 300]
        for b in refused:
            r = replies[b]
            assert r.headers.get("retry-after") == "1"
            body = r.json()
            assert body["error"] == "backpressure" and body["capacity"] == QUEUE_FRAMES, body
        accepted = {b for b in range(n_bins) if b not in refused}
        state = c.get("/v1/runs/bp/state/live").json()
        assert state["watermark"] == max(accepted)
        # what was refused changed nothing: it is new data when it is sent again
        for b in refused:
            res = post_bins(c, "bp", bodies[b])
            # new data: accepted, or a correction of a zero-filled placeholder (the grace ran out)
            assert res["accepted"] + res["corrected"] == 150 and res["duplicates"] == 0, res
        state = c.get("/v1/runs/bp/state/live").json()
        assert state["lastBin"] == n_bins - 1 and state["dataQuality"]["complete"], state["dataQuality"]
        close(c, "bp")
    live = read_run_series(srv.data_dir / "runs" / "bp")
    batch = run_model(model.live_text, telemetry=inputs)
    for s in batch.result.series:
        assert live[s.series_id].tobytes() == s.values.tobytes(), s.node_id


def test_sigterm_shuts_down_cleanly_with_exit_0(tmp_path: Path) -> None:
    """Issue 12 #10: after a clean shutdown uvicorn re-raised SIGTERM and the process died of it (−15)."""
    with ServerProcess(tmp_path / "data") as srv:
        assert srv.stop() == 0, srv.log_tail()
