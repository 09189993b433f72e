"""Fuzzing of the two hostile inputs a client controls most (issue 12): NDJSON frame bodies on a live
run, and model documents on validate, batch run and live create. Hypothesis generates them, from
well-formed through subtly wrong to garbage; every answer must be < 500, and every refused request
must change nothing — a refused ingest leaves the run's seq, lastBin, revision and log size as they
were; a refused create leaves no run and no folder. Case counts are reported in the test summary
(`tests/fuzz_counts.py`)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings
from tests.fuzz_counts import count

LIVE_MODEL = """
grid: {binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}
nodes:
  - {id: demand, kind: const, source: telemetry}
  - {id: cap, kind: const, source: telemetry}
  - {id: served, kind: expr, expr: "MIN(demand, cap)"}
  - {id: avg, kind: expr, expr: "ROLLING_MEAN(served, 3)"}
topology:
  nodes:
    - {id: Svc, kind: service, semantics: {arrivals: demand, served: served, capacity: cap, errors: telemetry}}
"""
NDJSON = {"content-type": "application/x-ndjson"}
JSON = {"content-type": "application/json"}
FUZZ = settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture], database=None)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    data = tmp_path_factory.mktemp("fuzz") / "data"
    settings_ = Settings(data_dir=data, fsync=False, max_bins_ahead=50, max_batch_cells=2_000_000)
    with TestClient(create_app(settings_, build_context(settings_)), base_url="http://127.0.0.1") as client:
        r = client.post("/v1/runs", json={"mode": "live", "model": LIVE_MODEL, "options": {"runId": "fz"}})
        assert r.status_code == 202, r.text
        yield client, data


# -- frames -----------------------------------------------------------------------------------------
numbers = st.one_of(
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.just(1e308),
    st.sampled_from([0, 1, 2.5, -1]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=12))
bins = st.one_of(st.integers(-3, 60), st.sampled_from([2**31, 2**63, 10**30]), scalars)
timestamps = st.one_of(
    st.sampled_from(["2025-10-07T00:05:00Z", "2025-10-07T00:07:00Z", "2025-10-06T00:00:00Z", "9999-12-31T23:55:00Z"]),
    st.text(max_size=25),
)
keys = st.sampled_from(
    ["bin", "ts", "series", "value", "node", "arrivals", "capacity", "errors", "served", "runId", "x"]
)
good_frame = st.fixed_dictionaries(
    {"bin": st.integers(0, 40), "series": st.sampled_from(["demand", "cap", "served", "nope"]), "value": numbers}
)
node_frame = st.fixed_dictionaries(
    {"bin": bins, "node": st.sampled_from(["Svc", "Nope", ""])},
    optional={"arrivals": numbers, "capacity": numbers, "errors": scalars, "served": numbers, "ts": timestamps},
)
wild_frame = st.dictionaries(keys, st.one_of(scalars, bins, timestamps), max_size=5)
valid_frame = st.one_of(
    st.fixed_dictionaries(
        {
            "bin": st.integers(0, 40),
            "series": st.sampled_from(["demand", "cap", "Svc.errors"]),
            "value": st.floats(0, 1e6),
        }
    ),
    st.fixed_dictionaries(
        {"bin": st.integers(0, 40), "node": st.just("Svc")},
        optional={"arrivals": st.floats(0, 1e6), "capacity": st.integers(0, 100), "errors": st.floats(0, 10)},
    ).filter(lambda f: len(f) > 2),
)
frames = st.one_of(
    st.lists(valid_frame, min_size=1, max_size=8),  # accepted, or refused as too far ahead / duplicate
    st.lists(st.one_of(valid_frame, good_frame, node_frame, wild_frame, scalars), max_size=8),
)


def frame_body(items: list[Any], form: str) -> bytes:
    if form == "array":
        return orjson.dumps(items, option=orjson.OPT_SERIALIZE_NUMPY) if _jsonable(items) else b"[" + b"," * 3 + b"]"
    lines = [orjson.dumps(x) if _jsonable(x) else b"{bad" for x in items]
    return b"\n".join(lines)


def _jsonable(value: Any) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return not (isinstance(value, float) and math.isnan(value))


def run_state(client: TestClient, data: Path) -> tuple[Any, ...]:
    detail = client.get("/v1/runs/fz").json()
    log_bytes = sum(p.stat().st_size for p in (data / "runs" / "fz" / "live").glob("ingest.log*"))
    return detail["seq"], detail["lastBin"], detail["watermark"], detail["revision"], log_bytes


@FUZZ
@given(items=frames, form=st.sampled_from(["array", "ndjson"]), garbage=st.binary(max_size=40))
def test_fuzzed_frames_answer_under_500_and_a_refusal_changes_nothing(
    service: tuple[TestClient, Path], items: list[Any], form: str, garbage: bytes
) -> None:
    client, data = service
    body = frame_body(items, form) if items or not garbage else garbage
    before = run_state(client, data)
    r = client.post("/v1/runs/fz/bins", content=body, headers=NDJSON)
    count("ndjson frames")
    assert r.status_code < 500, r.text
    assert "error" in r.json() if r.status_code >= 400 else r.status_code == 202
    if r.status_code >= 400:
        assert run_state(client, data) == before, (r.text, body)


# -- model documents --------------------------------------------------------------------------------
ids = st.one_of(st.sampled_from(["a", "b", "c", "e0", "Svc", "q"]), st.text(max_size=8))
literal = st.one_of(st.integers(-5, 20), st.sampled_from([10**7, 10**8, 1e30, -1, 0.5]))
exprs = st.one_of(
    st.sampled_from(["a + b", "MIN(a, 3)", "SHIFT(a, 1)", "a / b", "CONV(a, [0.5, 0.5])", "a +", "(", "b * c"]),
    st.builds(
        lambda f, x, n: f"{f}({x}, {n})", st.sampled_from(["SHIFT", "ROLLING_MEAN", "ROLLING_MAX"]), ids, literal
    ),
    st.builds(lambda p, ph: f"PULSE({p}, {ph})", literal, literal),
    st.text(max_size=20),
)
grid = st.fixed_dictionaries(
    {
        "bins": st.one_of(st.integers(-1, 12), st.sampled_from([10**6, 10**9, 2**70]), scalars),
        "binSize": st.one_of(st.integers(0, 3), st.sampled_from([1000, 10**6]), scalars),
        "binUnit": st.sampled_from(["minutes", "hours", "days", "weeks", "years", ""]),
    },
    optional={"start": st.one_of(timestamps, st.sampled_from(["9999-12-01T00:00:00Z", "0001-01-01T00:00:00Z"]))},
)
node = st.one_of(
    st.fixed_dictionaries({"id": ids, "kind": st.just("const"), "values": st.lists(numbers, max_size=14)}),
    st.fixed_dictionaries({"id": ids, "kind": st.just("expr"), "expr": exprs}),
    st.fixed_dictionaries(
        {
            "id": ids,
            "kind": st.just("pmf"),
            "pmf": st.fixed_dictionaries(
                {"values": st.lists(numbers, max_size=3), "probabilities": st.lists(numbers, max_size=3)}
            ),
        }
    ),
    st.fixed_dictionaries({"id": ids, "kind": st.sampled_from(["const", "serviceWithBuffer", "router", "x"])}),
    st.dictionaries(st.sampled_from(["id", "kind", "expr", "values", "source", "initial"]), scalars, max_size=4),
)
topology = st.fixed_dictionaries(
    {
        "nodes": st.lists(
            st.fixed_dictionaries(
                {"id": ids, "semantics": st.dictionaries(st.sampled_from(["arrivals", "served", "capacity"]), ids)},
                optional={"kind": st.sampled_from(["service", "queue", "dlq", "router", "sink", "x"])},
            ),
            max_size=3,
        )
    }
)
outputs = st.lists(st.fixed_dictionaries({"series": ids}, optional={"as": st.text(max_size=12)}), max_size=2)


@st.composite
def plausible_documents(draw: st.DrawFn) -> dict[str, Any]:
    """Models that are mostly valid: the grid, const series of the right length, expressions over them."""
    n = draw(st.integers(1, 12))
    values = st.lists(st.floats(-10, 1e3), min_size=n, max_size=n)
    nodes: list[dict[str, Any]] = [
        {"id": "a", "kind": "const", "values": draw(values)},
        {"id": "b", "kind": "const", "values": draw(values)},
    ]
    for i in range(draw(st.integers(0, 4))):
        nodes.append({"id": f"e{i}", "kind": "expr", "expr": draw(exprs)})
    doc: dict[str, Any] = {
        "grid": {"bins": n, "binSize": draw(st.integers(1, 5)), "binUnit": "minutes"},
        "nodes": nodes,
    }
    if draw(st.booleans()):
        semantics = {"arrivals": "a", "served": draw(st.sampled_from(["b", "e0", "a"])), "capacity": "b"}
        doc["topology"] = {
            "nodes": [{"id": "Svc", "kind": draw(st.sampled_from(["service", "queue"])), "semantics": semantics}]
        }
    return doc


documents = plausible_documents() | st.fixed_dictionaries(
    {"grid": grid, "nodes": st.lists(node, max_size=5)},
    optional={"topology": topology, "outputs": outputs, "rng": st.dictionaries(st.just("seed"), scalars)},
)


def runs_on_disk(data: Path) -> set[str]:
    runs = data / "runs"
    return {p.name for p in runs.iterdir()} if runs.is_dir() else set()


@FUZZ
@given(doc=documents, as_yaml=st.booleans())
def test_fuzzed_models_answer_under_500_and_a_refused_create_leaves_nothing(
    service: tuple[TestClient, Path], doc: dict[str, Any], as_yaml: bool
) -> None:
    client, data = service
    if not _jsonable(doc):
        doc = {"grid": doc["grid"], "nodes": []}
        if not _jsonable(doc):
            return
    text = yaml.safe_dump(doc) if as_yaml else orjson.dumps(doc).decode()
    count("model documents")
    for path in ("/v1/validate", "/v1/run"):
        r = client.post(
            path, content=text, headers={"content-type": "application/yaml" if as_yaml else "application/json"}
        )
        assert r.status_code < 500, (path, r.text)
    before = runs_on_disk(data)
    live_doc = dict(doc, grid={k: v for k, v in doc["grid"].items() if k != "bins"})
    create = {"mode": "live", "model": live_doc, "options": {"runId": "fz-new"}}
    r = client.post("/v1/runs", content=orjson.dumps(create), headers=JSON)
    assert r.status_code < 500, r.text
    if r.status_code >= 400:
        assert runs_on_disk(data) == before and client.get("/v1/runs/fz-new").status_code == 404
    else:
        assert client.delete("/v1/runs/fz-new").status_code in (200, 202, 204)
