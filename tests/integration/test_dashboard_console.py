"""The dashboard as an operator's console, in a real headless Chromium against a real `flowtime serve`
(issue 15 "Must show"). Every check reads the DOM and compares it with the service's own answers:

- a live run (the microservices template, its bundle sent bin by bin by the test): each node card's
  numbers (`[data-metric]`'s `data-value`, and the text shown) and colour equal `GET .../state` at the
  bin on display; scrubbing the time slider to bin k shows bin k's values on every card, new bins do
  not move it, "Follow live" snaps back; the run's warnings are marked on their nodes; the inspector
  of a node lists every metric and derived value of `/state` and draws a chart per field with axes,
  units and the bin on display marked;
- a batch run: coloured cards with its last bin's values, its warnings counted, time travel;
- a completed live run: values of its last bin, the connection shown as ended (not an error);
- the compare view: each card's change equals `POST /v1/compare`'s percentDelta, coloured by tone;
- `/docs`: Swagger UI renders the API from the package's assets, nothing from another origin.

Screenshots of each view go to the test's folder and `test-artifacts/screenshots/`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import Page, dashboard
from server_proc import ServerProcess

from compat_api.templates.catalog import install_template_bundle, instantiate
from engine_live.model.build import build_model
from engine_live.model.document import load_model
from ingestion.bundle import iter_frames, load_bundle

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CARD = ("arrivals", "served", "queueDepth", "utilization", "latencyMinutes", "capacity")

# every card: colour, bin, warnings, and per field the raw value and the text shown
CARDS_JS = """Object.fromEntries([...document.querySelectorAll('svg#graph g.node')].map((g) => [g.dataset.nodeId, {
  color: g.dataset.color, bin: g.dataset.bin, warnings: Number(g.dataset.warnings),
  values: Object.fromEntries([...g.querySelectorAll('[data-metric]')].map((t) =>
    [t.dataset.metric, {raw: t.dataset.value, text: t.textContent, tone: t.dataset.tone ?? null}]))}]))"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "data", log_dir=tmp_path) as srv:
        yield srv


def ndjson(frames: list[dict[str, Any]]) -> bytes:
    import orjson

    return b"".join(orjson.dumps(f) + b"\n" for f in frames)


class LiveRun:
    """A live microservices run whose bins the test sends."""

    def __init__(self, server: ServerProcess, run_id: str, bins: int = 96) -> None:
        self.http = httpx.Client(base_url=server.base_url, timeout=30)
        self.run_id = run_id
        data = server.data_dir
        bundle = install_template_bundle("microservices", data / "bundles")
        model, _, _ = instantiate(
            "microservices", {"bins": bins, "telemetryDir": "bundles/microservices"}, data_dir=data
        )
        r = self.http.post("/v1/runs", json={"mode": "live", "model": model, "options": {"runId": run_id}})
        assert r.status_code == 202, r.text
        graph = build_model(load_model(model, base_dir=data, live=True))
        self.per_bin = list(iter_frames(load_bundle(bundle), graph))
        self.sent = 0

    def send(self, upto: int) -> None:
        for b in range(self.sent, upto):
            if self.per_bin[b]:
                r = self.http.post(
                    f"/v1/runs/{self.run_id}/bins",
                    content=ndjson(self.per_bin[b]),
                    headers={"content-type": "application/x-ndjson"},
                )
                assert r.status_code == 202, r.text
        self.sent = max(self.sent, upto)

    def detail(self) -> dict[str, Any]:
        body: dict[str, Any] = self.http.get(f"/v1/runs/{self.run_id}").json()
        return body


def state_at(http: httpx.Client, run_id: str, bin_index: int) -> dict[str, Any]:
    r = http.get(f"/v1/runs/{run_id}/state", params={"binIndex": bin_index})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def field_of(node: dict[str, Any], field: str) -> Any:
    if field in (node.get("metrics") or {}):
        return node["metrics"][field]
    return (node.get("derived") or {}).get(field)


def same(raw: str, expected: Any) -> bool:
    if expected is None:
        return raw == ""
    return raw != "" and math.isclose(float(raw), float(expected), rel_tol=1e-12, abs_tol=1e-9)


def shown_number(text: str) -> float | None:
    """The number in a card's text: "1,204/bin" → 1204, "87.1%" → 87.1, "—" → None."""
    t = text.replace(",", "").replace("/bin", "").replace("%", "").replace(" items", "").replace(" min", "")
    return None if t.strip() in ("—", "") else float(t)


def check_cards(cards: dict[str, Any], state: dict[str, Any]) -> None:
    """Every card shows its node's values and colour of `state`'s bin."""
    bin_index = state["bin"]["index"]
    nodes = {n["id"]: n for n in state["nodes"]}
    assert set(cards) == set(nodes), (sorted(cards), sorted(nodes))
    for node_id, card in cards.items():
        node = nodes[node_id]
        assert card["bin"] == str(bin_index), (node_id, card["bin"], bin_index)
        assert card["color"] == node["derived"]["color"], (node_id, card["color"], node["derived"])
        for field in CARD:
            expected = field_of(node, field)
            got = card["values"][field]
            assert same(got["raw"], expected), (node_id, field, got, expected)
            number = shown_number(got["text"])
            if expected is None:
                assert number is None, (node_id, field, got)
            else:
                # the text is the value rounded for reading (whole counts from 100, 1 decimal for %)
                scale = 100.0 if field == "utilization" else 1.0
                assert number is not None and abs(number - expected * scale) <= 0.5, (node_id, field, got, expected)


async def cards(page: Page) -> dict[str, Any]:
    value: dict[str, Any] = await page.eval(CARDS_JS)
    return value


async def scrub(page: Page, bin_index: int) -> None:
    """Move the time slider as a user does (value + an `input` event)."""
    await page.eval(
        f"(() => {{ const s = document.querySelector('#scrubber'); s.value = '{bin_index}';"
        " s.dispatchEvent(new Event('input', {bubbles: true})); })()"
    )


async def until_cards_at(page: Page, bin_index: int) -> dict[str, Any]:
    await page.until(
        f"[...document.querySelectorAll('svg#graph g.node')].every((g) => g.dataset.bin === '{bin_index}')"
        " && document.querySelectorAll('svg#graph g.node').length > 0",
        f"every card at bin {bin_index}",
    )
    return await cards(page)


def test_live_run_numbers_time_travel_warnings_and_inspector(
    chromium: str, server: ServerProcess, tmp_path: Path
) -> None:
    run = LiveRun(server, "console-live")
    run.send(40)
    detail = run.detail()
    last = int(detail["lastBin"])
    assert last >= 30, detail
    try:
        asyncio.run(_live(chromium, server, run, last, tmp_path))
    finally:
        run.http.close()


async def _live(chromium: str, server: ServerProcess, run: LiveRun, last: int, out: Path) -> None:
    async with dashboard(chromium, out) as page:
        await page.open(f"{server.base_url}/?run={run.run_id}")
        await page.until(f"window.__flowtime?.connected && window.__flowtime.lastBin === {last}", "the page at lastBin")
        # the cards show the run's state at the bin on display (the newest)
        check_cards(await until_cards_at(page, last), state_at(run.http, run.run_id, last))
        # warnings are marked on their nodes and listed
        live = run.http.get(f"/v1/runs/{run.run_id}/state/live").json()
        warned: dict[str, int] = {}
        for w in live["warnings"]:
            if w.get("nodeId"):
                warned[w["nodeId"]] = warned.get(w["nodeId"], 0) + 1
        assert warned, "the microservices bundle raises warnings on its nodes"
        now = await cards(page)
        for node_id, count in warned.items():
            assert now[node_id]["warnings"] == count, (node_id, now[node_id]["warnings"], count)
        assert all(now[n]["warnings"] == 0 for n in now if n not in warned)
        listed = await page.eval(
            "[...document.querySelectorAll('#warnings li')].map((li) => li.dataset.code + '|' + li.dataset.nodeId)"
        )
        assert sorted(listed) == sorted(f"{w['code']}|{w.get('nodeId') or ''}" for w in live["warnings"])
        assert await page.eval("document.querySelector('#warning-count').textContent") == str(len(live["warnings"]))
        await page.shoot("dashboard-live")

        # time travel: bin k on every card; new bins do not move it; "Follow live" snaps back
        for k in (5, 17):
            await scrub(page, k)
            check_cards(await until_cards_at(page, k), state_at(run.http, run.run_id, k))
        assert await page.eval("window.__flowtime.following") is False
        run.send(48)
        new_last = int(run.detail()["lastBin"])
        await page.until(f"window.__flowtime.lastBin === {new_last}", "the new bins to arrive")
        check_cards(await until_cards_at(page, 17), state_at(run.http, run.run_id, 17))
        label = await page.eval("document.querySelector('#bin-label').textContent")
        assert "bin 17" in label and "2025-10-07 01:25 UTC" in label, label
        await page.shoot("dashboard-time-travel")
        await page.eval("document.querySelector('#follow').click()")
        check_cards(await until_cards_at(page, new_last), state_at(run.http, run.run_id, new_last))

        # the inspector: every value of the node at the bin, a chart per field with axes and the bin marked
        node_id = "OrderQueue" if "OrderQueue" in now else sorted(now)[0]
        card = f"document.querySelector('svg#graph g.node[data-node-id=\"{node_id}\"] rect.card')"
        await page.eval(f"{card}.dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
        await page.until("document.querySelectorAll('#inspector .chart').length > 2", "the inspector's charts")
        await scrub(page, 20)
        await until_cards_at(page, 20)
        await page.until(
            "document.querySelector('#inspector .chart line.now')?.dataset.bin === '20'", "the inspector at bin 20"
        )
        table = await page.eval(
            "Object.fromEntries([...document.querySelectorAll('#inspector table.values tr[data-field]')]"
            ".map((tr) => [tr.dataset.field, tr.querySelector('td.num').dataset.value]))"
        )
        node = next(n for n in state_at(run.http, run.run_id, 20)["nodes"] if n["id"] == node_id)
        numeric = {
            **node["metrics"],
            **{k: v for k, v in node["derived"].items() if isinstance(v, int | float) and not isinstance(v, bool)},
        }
        for field, value in numeric.items():
            assert field in table, (field, sorted(table))
            assert same(table[field], value), (field, table[field], value)
        charts = await page.eval(
            "[...document.querySelectorAll('#inspector .chart')].map((f) => ({field: f.dataset.field,"
            " ticks: f.querySelectorAll('.axis text').length, unit: f.querySelector('.axis text.unit')?.textContent,"
            " line: (f.querySelector('path.line')?.getAttribute('d') ?? '').length,"
            " now: f.querySelector('line.now')?.dataset.bin}))"
        )
        charted = {c["field"] for c in charts}
        assert {"arrivals", "served", "queueDepth"} <= charted, charted
        for c in charts:
            assert c["ticks"] >= 5 and c["unit"] and "(" in c["unit"] and c["line"] > 10 and c["now"] == "20", c
        await page.shoot("dashboard-inspector")


def test_batch_and_completed_runs_render(chromium: str, server: ServerProcess, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        _batch_and_completed(chromium, server, http, tmp_path)


def _batch_and_completed(chromium: str, server: ServerProcess, http: httpx.Client, tmp_path: Path) -> None:
    body = {"mode": "simulation", "template": "order-system", "parameters": {"bins": 48}, "options": {"runId": "batch"}}
    r = http.post("/v1/runs", json=body)
    assert r.status_code == 201, r.text
    warnings = http.get("/v1/runs/batch").json()["warnings"]
    run = LiveRun(server, "done", bins=96)
    run.send(30)
    closed = http.post("/v1/runs/done/close")
    assert closed.status_code in (200, 202), closed.text
    assert run.detail()["status"] == "completed"
    run.http.close()
    asyncio.run(_finished(chromium, server, http, warnings, tmp_path))


async def _finished(chromium: str, server: ServerProcess, http: httpx.Client, warnings: list[Any], out: Path) -> None:
    async with dashboard(chromium, out) as page:
        await page.open(f"{server.base_url}/?run=batch")
        got = await until_cards_at(page, 47)
        check_cards(got, state_at(http, "batch", 47))
        assert any(c["color"] != "gray" for c in got.values()), got
        count = await page.eval("document.querySelector('#warning-count').textContent")
        assert count == str(len(warnings)) and warnings, (count, warnings)
        assert await page.eval("document.querySelector('#conn').dataset.state") == "finished"
        await scrub(page, 12)
        check_cards(await until_cards_at(page, 12), state_at(http, "batch", 12))
        await page.shoot("dashboard-batch")

        await page.open(f"{server.base_url}/?run=done")
        last = int(http.get("/v1/runs/done").json()["lastBin"])
        check_cards(await until_cards_at(page, last), state_at(http, "done", last))
        # a completed run: shown as ended (once its stream says so), not as a failed connection
        await page.until("document.querySelector('#conn').dataset.state === 'ended'", "the stream shown as ended")
        assert await page.eval("window.__flowtime.status") == "completed"
        await scrub(page, 3)
        check_cards(await until_cards_at(page, 3), state_at(http, "done", 3))


def test_compare_view_shows_the_deltas(chromium: str, server: ServerProcess, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.base_url, timeout=60) as http:
        diff = _two_runs_and_their_diff(http)
    asyncio.run(_compare(chromium, server, diff, tmp_path))


def _two_runs_and_their_diff(http: httpx.Client) -> dict[str, Any]:
    base = {"mode": "simulation", "template": "order-system", "parameters": {"bins": 48}, "options": {"runId": "base"}}
    assert http.post("/v1/runs", json=base).status_code == 201
    overlay = {
        "mode": "overlay",
        "baseRunId": "base",
        "overlays": [{"id": "capacity", "kind": "expr", "expr": "120"}],
        "options": {"runId": "whatif"},
    }
    assert http.post("/v1/runs", json=overlay).status_code == 201
    diff: dict[str, Any] = http.post("/v1/compare", json={"baseRunId": "base", "compareRunId": "whatif"}).json()
    return diff


async def _compare(chromium: str, server: ServerProcess, diff: dict[str, Any], out: Path) -> None:
    async with dashboard(chromium, out) as page:
        await page.open(f"{server.base_url}/?run=base")
        await until_cards_at(page, 47)
        await page.eval(
            "(() => { const s = document.querySelector('#compare-select'); s.value = 'whatif';"
            " s.dispatchEvent(new Event('change', {bubbles: true})); })()"
        )
        await page.until(
            "window.__flowtime.compareReady && document.querySelector('#compare-panel table')", "the compare view"
        )
        got = await cards(page)
        changed = 0
        for n in diff["nodes"]:
            card = got[n["nodeId"]]
            for field in CARD:
                stats = n["metrics"].get(field)
                shown = card["values"][field]
                expected = stats["percentDelta"] if stats else None
                assert same(shown["raw"], expected), (n["nodeId"], field, shown, expected)
                if expected is not None and abs(expected) >= 0.5:
                    changed += 1
                    assert shown["tone"] in ("worse", "better", "changed"), (n["nodeId"], field, shown)
        assert changed, "the overlay changes something"
        cap = got["OrderService"]["values"]["capacity"]
        assert cap["tone"] == "worse" and cap["text"].startswith("-40"), cap  # capacity 200 → 120
        util = got["OrderService"]["values"]["utilization"]
        assert util["tone"] == "worse" and util["text"].startswith("+66.7"), util
        assert got["OrderService"]["color"] == "delta-worse"
        rows = await page.eval("document.querySelectorAll('#compare-panel tr[data-node-id]').length")
        assert rows >= len(diff["nodes"])
        await page.shoot("dashboard-compare")


def test_docs_page_works_offline(chromium: str, server: ServerProcess, tmp_path: Path) -> None:
    asyncio.run(_docs(chromium, server, tmp_path))


async def _docs(chromium: str, server: ServerProcess, out: Path) -> None:
    async with dashboard(chromium, out) as page:
        await page.open(f"{server.base_url}/docs")
        await page.until("document.querySelectorAll('.swagger-ui .opblock').length > 20", "Swagger UI's operations")
        title = await page.eval("document.querySelector('.swagger-ui .info .title')?.textContent ?? ''")
        assert "FlowTime Live" in title, title
        origins = await page.eval(
            "[...new Set(performance.getEntriesByType('resource').map((e) => new URL(e.name).origin))]"
        )
        assert origins == [server.base_url], origins  # everything from the service itself
        await page.shoot("docs-swagger")
