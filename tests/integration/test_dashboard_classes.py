"""The dashboard's class selector (issue 14, SPEC §14) in a real headless Chromium against a real
`flowtime serve`: a live class model (classes Alpha and Beta, `traffic.arrivals` naming the
telemetry-fed series `a` (Alpha) and `b` (Beta)) whose bins the test sends.

    s = a + b            Svc.arrivals     (class-bearing: Alpha = a, Beta = b)
    out = MIN(s, cap)    Svc.served       (the class shares of s, SPEC §14 "every other operation")
    cap = 10             Svc.capacity     (class-less: the node's own under a class)
    p                    Plain.arrivals, served (telemetry not named by arrivals: a class-less node)

Bin 0: a = 8, b = 3, p = 5 → Svc arrivals 11, served 10; Alpha: arrivals 8, served 10 · 8/11; Beta:
arrivals 3, served 10 · 3/11. Bin 1: a = 2, b = 6, p = 4 → arrivals 8 = served 8; Alpha 2 and 2,
Beta 6 and 6. Checks, all read from the DOM (waiting on DOM conditions, no sleeps):

- the selector lists "All classes", Alpha, Beta (from `/graph`'s `classes`);
- choosing Alpha: Svc's card shows Alpha's arrivals and served, its utilization and capacity are
  the node's (marked `data-scope="node"`), the kind line names the class and its share; Plain is
  dimmed and says "no classes"; the URL keeps `class=Alpha`;
- a new bin arriving on the stream (`run_update` `byClass`) shows Alpha's values of that bin;
- Beta in the inspector: its table and charts are Beta's, utilization is marked as the node's;
- "All classes" restores the totals; reopening `?class=Alpha` (and the run once completed, read
  back from its artifacts) shows Alpha again.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from browser_support import Page, dashboard
from server_proc import ServerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]
RUN = "classes"
MODEL: dict[str, Any] = {
    "grid": {"binSize": 5, "binUnit": "minutes", "start": "2025-01-01T00:00:00Z"},
    "nodes": [
        {"id": "a", "kind": "const", "source": "telemetry"},
        {"id": "b", "kind": "const", "source": "telemetry"},
        {"id": "p", "kind": "const", "source": "telemetry"},
        {"id": "s", "kind": "expr", "expr": "a + b"},
        {"id": "cap", "kind": "expr", "expr": "10"},
        {"id": "out", "kind": "expr", "expr": "MIN(s, cap)"},
    ],
    "classes": [{"id": "Alpha"}, {"id": "Beta"}],
    "traffic": {
        "arrivals": [
            {"nodeId": "a", "classId": "Alpha", "pattern": {"kind": "constant", "ratePerBin": 4}},
            {"nodeId": "b", "classId": "Beta", "pattern": {"kind": "constant", "ratePerBin": 6}},
        ]
    },
    "topology": {
        "nodes": [
            {"id": "Svc", "kind": "service", "semantics": {"arrivals": "s", "served": "out", "capacity": "cap"}},
            {"id": "Plain", "kind": "service", "semantics": {"arrivals": "p", "served": "p", "capacity": "cap"}},
        ]
    },
}
BINS = [{"a": 8, "b": 3, "p": 5}, {"a": 2, "b": 6, "p": 4}]

# every card: its class view, kind line, share, and per field the raw value, text and scope
CARDS_JS = """Object.fromEntries([...document.querySelectorAll('svg#graph g.node')].map((g) => [g.dataset.nodeId, {
  view: g.dataset.classView ?? '', bin: g.dataset.bin, kind: g.querySelector('text.kind').textContent,
  share: g.querySelector('rect.share').dataset.share ?? '',
  values: Object.fromEntries([...g.querySelectorAll('[data-metric]')].map((t) =>
    [t.dataset.metric, {raw: t.dataset.value, text: t.textContent, scope: t.dataset.scope ?? ''}]))}]))"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "data", log_dir=tmp_path) as srv:
        yield srv


def send_bin(http: httpx.Client, index: int) -> None:
    frames = [{"bin": index, "series": sid, "value": v} for sid, v in BINS[index].items()]
    body = b"".join(orjson.dumps(f) + b"\n" for f in frames)
    r = http.post(f"/v1/runs/{RUN}/bins", content=body, headers={"content-type": "application/x-ndjson"})
    assert r.status_code == 202, r.text


def close(raw: str, expected: float) -> bool:
    return raw != "" and math.isclose(float(raw), expected, rel_tol=1e-6)


async def cards(page: Page) -> dict[str, Any]:
    value: dict[str, Any] = await page.eval(CARDS_JS)
    return value


async def choose(page: Page, class_id: str) -> None:
    """Pick a class in the toolbar as a user does (value + a `change` event)."""
    await page.eval(
        f"(() => {{ const s = document.querySelector('#class-select'); s.value = '{class_id}';"
        " s.dispatchEvent(new Event('change', {bubbles: true})); })()"
    )


async def until_svc(page: Page, view: str, bin_index: int, arrivals: float) -> dict[str, Any]:
    """Wait until Svc's card shows `arrivals` at `bin_index` under the class view `view`; all cards."""
    card = "document.querySelector('svg#graph g.node[data-node-id=\"Svc\"]')"
    await page.until(
        f"{card}?.dataset.bin === '{bin_index}' && ({card}.dataset.classView ?? '') === '{view}'"
        f" && Math.abs(Number({card}.querySelector('[data-metric=\"arrivals\"]').dataset.value) - {arrivals}) < 1e-9",
        f"Svc at bin {bin_index} showing arrivals {arrivals} ({view or 'all classes'})",
    )
    return await cards(page)


def test_class_selector_shows_one_class_or_all(chromium: str, server: ServerProcess, tmp_path: Path) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as http:
        r = http.post("/v1/runs", json={"mode": "live", "model": MODEL, "options": {"runId": RUN}})
        assert r.status_code == 202, r.text
        send_bin(http, 0)
        assert http.get(f"/v1/runs/{RUN}/graph").json()["classes"] == ["Alpha", "Beta"]
        asyncio.run(_selector(chromium, server, http, tmp_path))


async def _selector(chromium: str, server: ServerProcess, http: httpx.Client, out: Path) -> None:
    async with dashboard(chromium, out) as page:
        await page.open(f"{server.base_url}/?run={RUN}")
        await page.until("window.__flowtime?.connected && window.__flowtime.lastBin === 0", "the page at bin 0")
        got = await until_svc(page, "", 0, 11.0)
        assert close(got["Svc"]["values"]["served"]["raw"], 10.0), got["Svc"]
        options = await page.eval("[...document.querySelectorAll('#class-select option')].map((o) => o.value)")
        assert options == ["", "Alpha", "Beta"], options
        assert await page.eval("document.querySelector('#class-select option').textContent") == "All classes"

        # Alpha: its values where a field carries classes, the node's elsewhere; Plain has no classes
        await choose(page, "Alpha")
        got = await until_svc(page, "class", 0, 8.0)
        svc, plain = got["Svc"], got["Plain"]
        assert close(svc["values"]["served"]["raw"], 10 * 8 / 11), svc  # 7.27…: MIN takes the shares of s
        assert svc["values"]["arrivals"]["scope"] == "class" and svc["values"]["served"]["scope"] == "class"
        assert close(svc["values"]["utilization"]["raw"], 1.0) and svc["values"]["utilization"]["scope"] == "node"
        assert close(svc["values"]["capacity"]["raw"], 10.0) and svc["values"]["capacity"]["scope"] == "node"
        assert "Alpha" in svc["kind"] and "72.7 %" in svc["kind"], svc["kind"]  # 8 of 11 arrivals
        assert close(svc["share"], 8 / 11), svc["share"]
        assert plain["view"] == "none" and "no classes" in plain["kind"], plain
        assert close(plain["values"]["arrivals"]["raw"], 5.0), plain  # its totals
        assert "class=Alpha" in await page.eval("location.search")
        note = await page.eval(
            "document.querySelector('#class-note').hidden ? '' : document.querySelector('#class-note').textContent"
        )
        assert "Alpha" in note, note
        await page.shoot("dashboard-class-alpha")

        # a new bin on the stream: Alpha's values of that bin (run_update byClass)
        await asyncio.to_thread(send_bin, http, 1)
        got = await until_svc(page, "class", 1, 2.0)
        assert close(got["Svc"]["values"]["served"]["raw"], 2.0), got["Svc"]
        assert close(got["Plain"]["values"]["arrivals"]["raw"], 4.0), got["Plain"]

        # Beta, in the inspector too
        await choose(page, "Beta")
        got = await until_svc(page, "class", 1, 6.0)
        assert close(got["Svc"]["values"]["served"]["raw"], 6.0), got["Svc"]
        svc_card = "document.querySelector('svg#graph g.node[data-node-id=\"Svc\"] rect.card')"
        await page.eval(f"{svc_card}.dispatchEvent(new MouseEvent('click', {{bubbles: true}}))")
        await page.until(
            "document.querySelector('#inspector .class-note')?.textContent.includes('Beta')"
            " && document.querySelectorAll('#inspector .chart').length >= 2",
            "the inspector of Svc under Beta",
        )
        rows = await page.eval(
            "Object.fromEntries([...document.querySelectorAll('#inspector table.values tr[data-field]')].map((tr) =>"
            " [tr.dataset.field, {value: tr.querySelector('td.num').dataset.value, scope: tr.dataset.scope,"
            " label: tr.cells[0].textContent}]))"
        )
        assert close(rows["arrivals"]["value"], 6.0) and rows["arrivals"]["scope"] == "class", rows
        assert close(rows["served"]["value"], 6.0) and rows["served"]["scope"] == "class", rows
        assert rows["utilization"]["scope"] == "node" and "(node)" in rows["utilization"]["label"], rows
        assert close(rows["utilization"]["value"], 0.8), rows  # the node's: 8 served of 10
        charts = await page.eval(
            "Object.fromEntries([...document.querySelectorAll('#inspector .chart')].map((f) =>"
            " [f.dataset.field, {scope: f.dataset.scope, unit: f.querySelector('.axis text.unit').textContent,"
            " label: f.querySelector('.now-label')?.textContent}]))"
        )
        assert charts["arrivals"]["scope"] == "class" and "Beta" in charts["arrivals"]["unit"], charts
        assert charts["arrivals"]["label"] == "6", charts  # the bin on display, Beta's
        assert charts["utilization"]["scope"] == "node", charts
        await page.shoot("dashboard-class-inspector")

        # All classes: the totals again, nothing dimmed, the URL without a class
        await choose(page, "")
        got = await until_svc(page, "", 1, 8.0)
        assert close(got["Svc"]["values"]["served"]["raw"], 8.0), got["Svc"]
        assert got["Plain"]["view"] == "" and "no classes" not in got["Plain"]["kind"], got["Plain"]
        assert all(v["scope"] == "" for v in got["Svc"]["values"].values()), got["Svc"]
        assert got["Svc"]["kind"] == "service", got["Svc"]
        assert "class=" not in await page.eval("location.search")
        await page.until(
            "document.querySelector('#inspector tr[data-field=\"arrivals\"] td.num')?.dataset.value === '8'",
            "the inspector's totals",
        )

        # the class in the URL: a reload shows Alpha (from /state/live's window)
        await page.open(f"{server.base_url}/?run={RUN}&class=Alpha")
        got = await until_svc(page, "class", 1, 2.0)
        assert await page.eval("document.querySelector('#class-select').value") == "Alpha"

        # the run completed and read back from its artifacts (/graph classes from series/index.json)
        closed = await asyncio.to_thread(http.post, f"/v1/runs/{RUN}/close")
        assert closed.status_code in (200, 202), closed.text
        await page.open(f"{server.base_url}/?run={RUN}&class=Beta")
        await page.until("window.__flowtime?.status === 'completed'", "the completed run")
        got = await until_svc(page, "class", 1, 6.0)
        options = await page.eval("[...document.querySelectorAll('#class-select option')].map((o) => o.value)")
        assert options == ["", "Alpha", "Beta"], options
