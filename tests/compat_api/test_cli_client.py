"""Client commands of the CLI: argument parsing, cursors, the tail's view and table, HTTP retries, exit codes."""

from __future__ import annotations

import asyncio
import json
import sys
import types
from pathlib import Path
from typing import Any

import httpx
import pytest
from rich.console import Console

from compat_api.cli.client import Api, replay, retry_after
from compat_api.cli.demo import pick_run_id
from compat_api.cli.main import build_parser, main
from compat_api.cli.stream import StreamTail, TailView, parse_cursor, render_table, stream_url
from engine_live.errors import BadInputError, ServerError

MODEL = """schemaVersion: 1
grid: {{bins: 4, binSize: 5, binUnit: minutes, start: "2025-10-07T00:00:00Z"}}
nodes:
  - {{id: arrivals, kind: const, values: {arrivals}}}
  - {{id: capacity, kind: const, values: [25, 25, 25, 25]}}
  - {{id: served, kind: expr, expr: "MIN(arrivals, capacity)"}}
topology:
  nodes:
    - {{id: Svc, kind: service, semantics: {{arrivals: arrivals, served: served, capacity: capacity}}}}
"""


# -- argument parsing ---------------------------------------------------------------------------
def test_parser_registers_client_commands_with_defaults() -> None:
    p = build_parser()
    a = p.parse_args(["ingest", "r1", "--bundle", "b", "--speed", "8", "--close"])
    assert (a.run_id, a.bundle, a.speed, a.close, a.url) == ("r1", "b", 8.0, True, "http://127.0.0.1:8080")
    s = p.parse_args(["stream", "runs", "r1", "--since", "e1:4", "--nodes", "A,B", "--json", "--token", "t"])
    assert (s.run_id, s.since, s.nodes, s.json, s.token) == ("r1", "e1:4", "A,B", True, "t")
    d = p.parse_args(["demo"])
    assert (d.speed, d.duration, d.port, d.data_dir) == (
        4.0,
        None,
        None,
        None,
    )  # FLOWTIME_PORT/DATA_DIR or 8080, ./data
    c = p.parse_args(["compare", "a", "b", "--data-dir", "x"])
    assert (c.a, c.b, c.data_dir) == ("a", "b", "x")
    al = p.parse_args(["artifacts", "list", "--type", "bundle"])
    assert al.type == "bundle"
    tc = p.parse_args(["telemetry", "capture", "--run-dir", "r", "--output", "o", "--dry-run"])
    assert (tc.run_dir, tc.output, tc.gaps, tc.dry_run) == ("r", "o", None, True)
    for cmd in ("run", "validate", "serve"):  # the existing commands are still there
        assert cmd in p.format_help()


def test_parser_rejects_missing_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["ingest", "r1"])
    assert exc.value.code == 2


# -- cursors and urls ---------------------------------------------------------------------------
def test_parse_cursor() -> None:
    assert parse_cursor("3f9a1c2e:41") == ("3f9a1c2e", 41)
    assert parse_cursor("a:b:0") == ("a:b", 0)  # the epoch is opaque
    for bad in ("41", ":3", "e1:", "e1:-1", "e1:x"):
        with pytest.raises(BadInputError):
            parse_cursor(bad)


def test_stream_url() -> None:
    assert stream_url("http://h:1/", "r 1") == "ws://h:1/v1/runs/r%201/stream"
    assert stream_url("https://h", "r1") == "wss://h/v1/runs/r1/stream"


def test_bad_since_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["stream", "runs", "r1", "--since", "nope", "--url", "http://127.0.0.1:9"]) == 2
    assert "EPOCH:SEQ" in capsys.readouterr().err


def test_unreachable_server_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    assert main(["ingest", "r1", "--bundle", str(tmp_path), "--url", "http://127.0.0.1:9"]) == 3
    err = capsys.readouterr().err
    assert "cannot reach" in err and "Traceback" not in err


# -- cursor tracking ----------------------------------------------------------------------------
def ev(kind: str, seq: int, epoch: str = "e1", **body: Any) -> dict[str, Any]:
    return {"v": 1, "type": kind, "runId": "r1", "epoch": epoch, "seq": seq, **body}


def test_track_advances_detects_gaps_and_follows_snapshots() -> None:
    notices: list[str] = []
    tail = StreamTail("http://x", "r1", on_notice=notices.append)
    tail.track({"type": "subscribed", "epoch": "e1", "seq": 9, "recovered": True})
    assert tail.cursor is None  # the head is not a position the client has seen
    for seq in (1, 2):
        tail.track(ev("run_update", seq))
    tail.track(ev("progress", 2))  # heartbeats repeat the seq
    tail.track(ev("warning_update", 5))
    assert tail.cursor == ("e1", 5) and tail.gaps == [(3, 4)] and "gap" in notices[-1]
    tail.track({"type": "snapshot", "epoch": "e1", "seq": 40, "state": {}})
    assert tail.cursor == ("e1", 40)
    tail.track(ev("run_update", 1, epoch="e2"))
    assert tail.cursor == ("e2", 1) and "new epoch" in notices[-1]


# -- the view and its table ---------------------------------------------------------------------
def delta(node: str, colour: str, util: float) -> dict[str, Any]:
    return {
        "nodeId": node,
        "kind": "service",
        "metrics": {"arrivals": 10.0, "served": 9.0},
        "derived": {"utilization": util, "color": colour},
    }


def test_view_folds_events_and_table_renders_them() -> None:
    view = TailView("r1")
    view.apply(
        {
            "type": "snapshot",
            "epoch": "e1",
            "seq": 3,
            "state": {
                "status": "live",
                "lastBin": 1,
                "watermark": 2,
                "bin": {"startUtc": "2025-10-07T00:05:00Z"},
                "nodes": [
                    {"id": "Gateway", "kind": "service", "metrics": {"arrivals": 1.0}, "derived": {"color": "gray"}}
                ],
                "warnings": [],
            },
        }
    )
    assert (view.seq, view.last_bin, view.lag) == (3, 1, 1)
    view.apply(
        ev(
            "run_update",
            4,
            binIndex=2,
            binStartUtc="2025-10-07T00:10:00Z",
            status="live",
            watermark=5,
            lastBin=2,
            deltas=[delta("Gateway", "red", 0.95), delta("Orders", "green", 0.5)],
        )
    )
    view.apply(ev("warning_update", 5, op="add", warning={"code": "data_gap", "nodeId": "Orders"}))
    view.apply(ev("progress", 5, watermark=6, lagBins=4))
    assert (view.seq, view.bin_index, view.lag, len(view.warnings)) == (5, 2, 4, 1)
    console = Console(record=True, width=200, color_system="truecolor")
    console.print(render_table(view))
    text = console.export_text(clear=False)
    assert "Gateway" in text and "Orders" in text and "seq 5" in text and "lag 4" in text
    assert "0.950" in text and "warnings 1" in text and "│       10 │      9 │" in text
    ansi = console.export_text(styles=True)
    assert "\x1b[31m● red" in ansi and "\x1b[32m● green" in ansi  # colours drawn in their colour
    view.apply(ev("warning_update", 6, op="clear", warning={"code": "data_gap", "nodeId": "Orders"}))
    view.apply(ev("status", 7, status="completed"))
    assert view.warnings == {} and view.status == "completed"


def test_class_view_shows_the_class_on_class_bearing_nodes_and_marks_class_less_ones(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`stream runs --class Alpha` (issue 14): subscribes with `classes: [Alpha]`; the table shows Alpha's
    values on class-bearing nodes, the totals on class-less ones, marked."""
    args = build_parser().parse_args(["stream", "runs", "r1", "--class", "Alpha"])
    assert args.class_id == "Alpha"
    view = TailView("r1", args.class_id)
    bearing = delta("Gateway", "green", 0.5) | {"byClass": {"Alpha": {"arrivals": 4.0, "served": 3.0}}}
    view.apply(ev("run_update", 1, binIndex=0, deltas=[bearing, delta("Orders", "green", 0.25)]))
    console = Console(record=True, width=200)
    console.print(render_table(view))
    text = console.export_text()
    rows = {cells[0]: cells[1:] for line in text.splitlines() if (cells := [c.strip() for c in line.split("│")[1:-1]])}
    assert "class Alpha" in text and rows["Gateway"][1:4] == ["Alpha", "4", "3"]  # kind, values, arrivals, served
    assert rows["Orders"][1:4] == ["total (no classes)", "10", "9"] and rows["Orders"][6] == "0.250"
    assert main(["stream", "runs", "r1", "--class", "Alpha,Beta"]) == 2  # not a class id: bad input, no socket
    assert "--class 'Alpha,Beta'" in capsys.readouterr().err


# -- HTTP: retries, errors, pacing --------------------------------------------------------------
def test_retry_after_parsing() -> None:
    assert retry_after("2") == 2.0 and retry_after(None) == 1.0 and retry_after("soon") == 1.0


async def test_ingest_honours_429_retry_after_then_succeeds() -> None:
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        if len(bodies) < 3:
            return httpx.Response(429, headers={"Retry-After": "2"}, json={"error": "backpressure"})
        return httpx.Response(202, json={"accepted": 2, "duplicates": 0, "corrected": 0, "lastBin": 0})

    slept: list[float] = []

    async def sleep(s: float) -> None:
        slept.append(s)

    async with Api("http://svc", transport=httpx.MockTransport(handler)) as api:
        frames = [{"bin": 0, "node": "A", "arrivals": 1}, {"bin": 0, "series": "s", "value": 2}]
        answer, retries = await api.ingest("r1", frames, sleep=sleep)
    assert (answer["accepted"], retries, slept) == (2, 2, [2.0, 2.0])
    assert len(set(bodies)) == 1 and [json.loads(x) for x in bodies[0].splitlines()][1]["series"] == "s"


async def test_ingest_gives_up_when_the_queue_stays_full() -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(429, headers={"Retry-After": "50"}))

    async def sleep(s: float) -> None:
        return None

    async with Api("http://svc", transport=transport) as api:
        with pytest.raises(ServerError, match="stayed full"):
            await api.ingest("r1", [{"bin": 0}], max_wait_s=120, sleep=sleep)


@pytest.mark.parametrize(("status", "error"), [(404, BadInputError), (422, BadInputError), (500, ServerError)])
async def test_error_answers_map_to_exit_classes(status: int, error: type[Exception]) -> None:
    transport = httpx.MockTransport(lambda r: httpx.Response(status, json={"error": "x", "message": "boom"}))
    async with Api("http://svc", transport=transport) as api:
        with pytest.raises(error, match="boom"):
            await api.ingest("r1", [{"bin": 0}])


async def test_replay_skips_empty_bins_sums_answers_and_stops() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content.splitlines()[0])["bin"])
        return httpx.Response(202, json={"accepted": 1, "duplicates": 1, "corrected": 0, "lastBin": seen[-1]})

    per_bin: list[list[dict[str, Any]]] = [[{"bin": 0}], [], [{"bin": 2}], [{"bin": 3}]]
    async with Api("http://svc", transport=httpx.MockTransport(handler)) as api:
        stats = await replay(api, "r1", per_bin)
        assert (seen, stats.bins, stats.requests, stats.accepted, stats.duplicates) == ([0, 2, 3], 4, 3, 3, 3)
        stop = asyncio.Event()
        stopped = await replay(
            api, "r1", per_bin, speed=1000.0, stop=stop, on_bin=lambda s: stop.set() if s.bins == 1 else None
        )
    assert stopped.bins == 1


# -- offline commands ---------------------------------------------------------------------------
def _batch_run(tmp_path: Path, name: str, arrivals: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`flowtime run` from inside <tmp>/data, so the run lands in data/runs/<runId>."""
    model = tmp_path / f"{name}.yaml"
    model.write_text(MODEL.format(arrivals=arrivals))
    (tmp_path / "data").mkdir(exist_ok=True)
    monkeypatch.chdir(tmp_path / "data")
    before = set((tmp_path / "data" / "runs").glob("*"))
    assert main(["run", str(model)]) == 0
    (out,) = set((tmp_path / "data" / "runs").glob("*")) - before
    return out


def test_compare_by_id_and_by_folder_writes_diff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    a = _batch_run(tmp_path, "a", "[10, 20, 30, 40]", monkeypatch)
    b = _batch_run(tmp_path, "b", "[10, 20, 30, 50]", monkeypatch)
    data = tmp_path / "data"
    capsys.readouterr()
    assert main(["compare", a.name, b.name, "--data-dir", str(data)]) == 0
    out = capsys.readouterr().out
    assert "arrivals" in out and "diff written to" in out
    diffs = list((data / "compares").glob("*/diff.json"))
    assert len(diffs) == 1
    diff = json.loads(diffs[0].read_text())
    assert (diff["baseRunId"], diff["compareRunId"]) == (a.name, b.name)
    assert diff["path"] == f"compares/{diffs[0].parent.name}/diff.json"
    arrivals = next(s for s in diff["series"] if s["id"] == "arrivals")
    assert arrivals["mae"] == 2.5 and arrivals["percentDelta"] == 10.0
    monkeypatch.chdir(tmp_path)  # run folders given by path, from anywhere
    assert main(["compare", str(a), str(b), "--data-dir", str(data), "--out", str(tmp_path / "d.json")]) == 0
    assert json.loads((tmp_path / "d.json").read_text())["series"] == diff["series"]
    assert main(["compare", "nope", str(b), "--data-dir", str(data)]) == 2


def test_artifacts_list_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _batch_run(tmp_path, "a", "[1, 2, 3, 4]", monkeypatch)
    capsys.readouterr()
    assert main(["artifacts", "list", "--type", "run", "--json", "--data-dir", str(tmp_path / "data")]) == 0
    items = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [i["type"] for i in items] == ["run"]
    assert main(["artifacts", "list", "--data-dir", str(tmp_path / "data")]) == 0
    assert items[0]["id"] in capsys.readouterr().out


def test_telemetry_capture_calls_capture_run_or_explains(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "snapshot_writer.capture", None)  # import fails
    assert main(["telemetry", "capture", "--run-dir", "r", "--output", "o"]) == 3
    assert "not available" in capsys.readouterr().err
    calls: list[tuple[Any, ...]] = []

    def capture_run(run_dir: Path, output: Path, gaps: Path | None = None, dry_run: bool = False) -> Any:
        calls.append((run_dir, output, gaps, dry_run))
        return {"files": 3}

    fake = types.ModuleType("snapshot_writer.capture")
    setattr(fake, "capture_run", capture_run)  # noqa: B010 - a module object built at run time
    monkeypatch.setitem(sys.modules, "snapshot_writer.capture", fake)
    args = ["telemetry", "capture", "--run-dir", "r", "--output", "o", "--gaps", "g.yaml", "--dry-run"]
    assert main(args) == 0
    assert calls == [(Path("r"), Path("o"), Path("g.yaml"), True)]
    assert '"files": 3' in capsys.readouterr().out


def test_demo_run_ids_are_new_each_time(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    now = datetime(2025, 10, 7, 1, 2, 3, tzinfo=UTC)
    assert pick_run_id(tmp_path, now) == "demo-20251007T010203Z"
    (tmp_path / "demo-20251007T010203Z").mkdir()
    assert pick_run_id(tmp_path, now) == "demo-20251007T010203Z-2"
