"""The dashboard in a real browser against a running `flowtime demo` (SPEC §11, issue 7 "Must show").

Debian's `chromium` runs headless (installed by `.ci/run` when missing; the test skips, saying so,
only when no chromium binary exists) and is driven over the DevTools protocol (`browser_support`):
`Runtime.evaluate` reads `window.__flowtime` and the DOM, `Page.captureScreenshot` writes the PNG.
The console's views (values, time travel, inspector, compare, batch runs) are tested in
`test_dashboard_console.py`, its speed with 1,000 nodes in `test_dashboard_perf.py`.

Checks, against `flowtime demo --speed 4` (a live run of the `microservices` template):
- the page draws every topology node of `GET /v1/runs/{id}/graph` as `svg#graph g.node`;
- seq and the node colours change as bins arrive, and the DOM's `data-color`s follow;
- the page's WebSocket is dropped (closed from the page, code 3000, as a network cut looks to the
  app): it reconnects (`reconnects` goes up) with its cursor, and every seq'd event from the first
  cursor to the end arrived (a recorder wrapped around `WebSocket` before the app loaded logs every
  frame), with `__flowtime.gaps` still 0;
- a screenshot goes to the test's folder and to `bench/out/dashboard.png`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import ROOT, apoll, browser_page, demo_run_id, free_port, running

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Installed before the app's module runs: logs every frame the page receives and keeps the sockets,
# so the test can check seq continuity across a reconnect and drop the connection.
RECORDER = """
(() => {
  const Native = window.WebSocket;
  window.__wsLog = [];
  window.__sockets = [];
  class Recorded extends Native {
    constructor(...args) {
      super(...args);
      const n = window.__sockets.push(this);
      this.addEventListener("message", (e) => {
        try {
          const m = JSON.parse(e.data);
          window.__wsLog.push({socket: n, type: m.type, seq: m.seq ?? null, epoch: m.epoch ?? null,
                               skipped: m.skipped ?? null, binIndex: m.binIndex ?? null,
                               coloured: (m.deltas ?? []).some((d) => typeof d.derived?.color === "string")});
        } catch (err) { window.__wsLog.push({socket: n, type: "unparsable"}); }
      });
    }
  }
  window.WebSocket = Recorded;
})();
"""


# -- the test ---------------------------------------------------------------------------------------
def test_dashboard_in_headless_chromium(chromium: str, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("FLOWTIME_")}, "PYTHONUNBUFFERED": "1"}
    demo_log = tmp_path / "demo.log"
    cmd = [
        sys.executable,
        "-m",
        "compat_api.cli",
        "demo",
        "--speed",
        "4",
        "--duration",
        "60",
        "--port",
        str(port),
        "--data-dir",
        str(tmp_path / "data"),
    ]
    with running(cmd, demo_log, env) as demo:
        run_id = demo_run_id(base, demo, demo_log)
        graph = httpx.get(f"{base}/v1/runs/{run_id}/graph", timeout=10.0).json()
        node_ids = {str(n["id"]) for n in graph["nodes"]}
        assert node_ids, graph
        # chromium helper processes may still write to the profile while it is removed: ignore that
        with tempfile.TemporaryDirectory(prefix="flowtime-chromium-", ignore_cleanup_errors=True) as profile:
            asyncio.run(drive(chromium, Path(profile), tmp_path, f"{base}/?run={run_id}", run_id, node_ids))


async def drive(binary: str, profile: Path, out: Path, url: str, run_id: str, node_ids: set[str]) -> None:
    async with browser_page(binary, profile, out / "chromium.log") as page:
        await page.send("Page.enable")
        await page.send("Runtime.enable")
        await page.send("Page.addScriptToEvaluateOnNewDocument", source=RECORDER)
        await page.send("Page.navigate", url=url)

        seen: list[dict[str, Any]] = [{}]

        def last() -> dict[str, Any]:
            return seen[-1]

        async def state() -> dict[str, Any]:
            value: dict[str, Any] = await page.eval(
                "(() => { const f = window.__flowtime; if (!f) return {};"
                " return {runId: f.runId, seq: f.seq, epoch: f.epoch, connected: f.connected,"
                " connection: f.connection, reconnects: f.reconnects, gaps: f.gaps, lastBin: f.lastBin,"
                " nodeColors: f.nodeColors,"
                " dom: Object.fromEntries([...document.querySelectorAll('svg#graph g.node[data-node-id]')]"
                "   .map((g) => [g.dataset.nodeId, g.dataset.color])),"
                " seqText: document.querySelector('#seq')?.textContent,"
                " conn: document.querySelector('#conn')?.dataset.state,"
                " error: document.querySelector('#error')?.textContent}; })()"
            )
            seen.append(value)
            return value

        # the page shows every node of the run's topology, and connects
        async def drawn() -> dict[str, Any] | None:
            s = await state()
            return s if s.get("connected") and set(s.get("dom") or {}) >= node_ids else None

        first = await apoll(drawn, "every topology node drawn and the stream connected", last)
        assert first["runId"] == run_id
        assert set(first["dom"]) == node_ids, "the page draws exactly the run's topology nodes"
        assert first["conn"] == "live"

        # seq and colours change as bins arrive; the colours come with the run_updates (SPEC §7 NodeDelta)
        async def seq_moved() -> dict[str, Any] | None:
            s = await state()
            return s if s["seq"] >= first["seq"] + 8 else None

        await apoll(seq_moved, "seq to advance by 8 as bins arrive", last)
        updates = [m for m in await page.eval("window.__wsLog") if m["type"] == "run_update"]
        assert updates, "no run_update reached the page"
        assert any(m["coloured"] for m in updates), (
            f"none of {len(updates)} run_updates carries a node colour (deltas[].derived.color is empty): "
            "the live engine publishes no derived metrics, so the page cannot colour nodes live"
        )
        colour_maps = [first["nodeColors"]]

        async def advanced() -> dict[str, Any] | None:
            s = await state()
            if s["nodeColors"] != colour_maps[-1]:
                colour_maps.append(s["nodeColors"])
            moved = s["seq"] >= first["seq"] + 8 and len(colour_maps) >= 2
            return s if moved and any(c != "gray" for c in s["nodeColors"].values()) else None

        later = await apoll(advanced, "seq and node colours changing", last)
        assert later["seqText"] == str(later["seq"])
        assert later["dom"] == later["nodeColors"], "the SVG's data-color follows the state"
        assert set(later["dom"].values()) <= {"green", "yellow", "red", "gray", "dlq"}

        # drop the connection from the page: it must reconnect with its cursor and miss nothing
        before = await state()
        await page.eval("window.__sockets[window.__sockets.length - 1].close(3000, 'test: network cut')")

        async def resumed() -> dict[str, Any] | None:
            s = await state()
            ok = s["reconnects"] > before["reconnects"] and s["connected"] and s["seq"] >= before["seq"] + 8
            return s if ok else None

        after = await apoll(resumed, "a reconnect that resumes the stream", last)
        assert after["epoch"] == before["epoch"]
        assert after["gaps"] == 0

        log: list[dict[str, Any]] = await page.eval("window.__wsLog")
        check_no_gap(log, after["seq"])

        shot = await page.send("Page.captureScreenshot", format="png")
        png = base64.b64decode(shot["data"])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        (out / "dashboard.png").write_bytes(png)
        bench_out = ROOT / "bench" / "out"
        bench_out.mkdir(parents=True, exist_ok=True)
        (bench_out / "dashboard.png").write_bytes(png)


SEQD = {"run_update", "warning_update", "status"}


def check_no_gap(log: list[dict[str, Any]], final_seq: int) -> None:
    """Every seq after the first connection's cursor up to `final_seq` reached the page."""
    sockets = sorted({int(m["socket"]) for m in log})
    assert len(sockets) >= 2, f"expected a second connection, saw sockets {sockets}"
    subscribed = [m for m in log if m["type"] == "subscribed"]
    assert len(subscribed) >= 2, subscribed
    assert not any(m["type"] in ("resync", "snapshot") for m in log if m["socket"] != sockets[0]), (
        "the reconnect fell back to a snapshot instead of resuming from its cursor"
    )
    cursor = int(subscribed[0]["seq"]) if subscribed[0]["seq"] is not None else 0
    snapshots = [m for m in log if m["type"] == "snapshot" and m["socket"] == sockets[0]]
    start = max([cursor] + [int(m["seq"]) for m in snapshots if m["seq"] is not None])
    seen: set[int] = set()
    for m in log:
        if m["type"] in SEQD and m["seq"] is not None:
            seen.add(int(m["seq"]))
        seen.update(int(s) for s in m.get("skipped") or [])  # coalesced by the server: not a gap
    missing = sorted(set(range(start + 1, final_seq + 1)) - seen)
    assert not missing, f"seqs never delivered to the page: {missing[:20]} (cursor {start}, final {final_seq})"
    second = [int(m["seq"]) for m in log if m["socket"] == sockets[1] and m["type"] in SEQD and m["seq"] is not None]
    assert second, "no events on the second connection"
