"""Issue 14 end to end: a live class run on a real `flowtime serve`, WebSocket clients subscribing with
`classes`, and `flowtime stream runs --class` (SPEC §7, §14)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import orjson
import pytest
from cli_support import Service, flowtime
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

pytestmark = pytest.mark.integration
RUN = "classes-live"
MODEL: dict[str, Any] = {
    "grid": {"binSize": 5, "binUnit": "minutes", "start": "2025-01-01T00:00:00Z"},
    "nodes": [
        {"id": "a", "kind": "const", "source": "telemetry"},
        {"id": "b", "kind": "const", "source": "telemetry"},
        {"id": "s", "kind": "expr", "expr": "a + b"},
        {"id": "c", "kind": "const", "source": "telemetry"},
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
            {"id": "Svc", "semantics": {"arrivals": "s", "served": "s"}},  # a + b: Alpha = a, Beta = b
            {"id": "Plain", "semantics": {"arrivals": "c"}},  # class-less
        ]
    },
}
VALUES = {0: (8.0, 3.0, 5.0), 1: (2.0, 7.0, 6.0)}  # bin → a, b, c


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(15):
        body: dict[str, Any] = orjson.loads(await ws.recv())
        return body


async def subscribe(ws: ClientConnection, **fields: Any) -> dict[str, Any]:
    await ws.send(orjson.dumps({"type": "subscribe", "since": None, "nodes": None} | fields).decode())
    reply = await recv(ws)
    assert reply["type"] == "subscribed", reply
    return reply


async def updates(ws: ClientConnection, n: int) -> list[dict[str, Any]]:
    """The next `n` run_updates (other messages skipped)."""
    out: list[dict[str, Any]] = []
    while len(out) < n:
        msg = await recv(ws)
        if msg["type"] == "run_update":
            out.append(msg)
    return out


def nodes(update: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["nodeId"]: d for d in update["deltas"]}


async def test_a_classes_subscription_and_the_cli_tail_see_only_their_class(service: Service) -> None:
    body = {"mode": "live", "model": MODEL, "options": {"runId": RUN}}
    async with httpx.AsyncClient(base_url=service.url, timeout=30) as http:
        assert (await http.post("/v1/runs", json=body)).status_code == 202
        stream = f"ws://127.0.0.1:{service.port}/v1/runs/{RUN}/stream"
        async with connect(stream) as alpha, connect(stream) as everything:
            await subscribe(alpha, classes=["Alpha"])
            await subscribe(everything)
            for b, (a, bb, c) in VALUES.items():
                frames = [{"bin": b, "series": "a", "value": a}, {"bin": b, "series": "b", "value": bb}]
                frames.append({"bin": b, "series": "c", "value": c})
                posted = await http.post(
                    f"/v1/runs/{RUN}/bins",
                    content=b"\n".join(orjson.dumps(f) for f in frames),
                    headers={"content-type": "application/x-ndjson"},
                )
                assert posted.status_code == 202, posted.text
            filtered, full = await updates(alpha, 2), await updates(everything, 2)
        for mine, theirs in zip(filtered, full, strict=True):
            a, bb, c = VALUES[mine["binIndex"]]
            assert nodes(theirs)["Svc"]["byClass"] == {
                "Alpha": {"arrivals": a, "served": a},
                "Beta": {"arrivals": bb, "served": bb},
            }
            assert nodes(mine)["Svc"]["byClass"] == {"Alpha": {"arrivals": a, "served": a}}  # only Alpha
            assert (
                nodes(mine)["Svc"]["metrics"]
                == nodes(theirs)["Svc"]["metrics"]
                == {"arrivals": a + bb, "served": a + bb}
            )
            assert nodes(mine)["Plain"] == nodes(theirs)["Plain"] and "byClass" not in nodes(mine)["Plain"]
            assert nodes(mine)["Plain"]["metrics"]["arrivals"] == c
        async with connect(stream) as compact:  # replayed from history, in compact form, Alpha only
            await subscribe(compact, classes=["Alpha"], format="compact")
            first, second = await updates(compact, 2)
            assert first["layout"]["byClass"] == [0] and first["byClass"] == {
                "Alpha": {"arrivals": [8.0, None], "served": [8.0, None]}
            }
            assert second["idx"] == [0, 1] and second["byClass"] == {
                "Alpha": {"arrivals": [2.0, None], "served": [2.0, None]}
            }
        async with connect(stream) as late:  # an unknown epoch: a snapshot, trimmed to Alpha
            await subscribe(late, since={"epoch": "elsewhere", "seq": 1}, classes=["Alpha"])
            snapshot = await recv(late)
            assert snapshot["type"] == "snapshot"
            state = {n["id"]: n for n in snapshot["state"]["nodes"]}
            assert (
                state["Svc"]["byClass"] == {"Alpha": {"arrivals": 2.0, "served": 2.0}}
                and "byClass" not in state["Plain"]
            )
            window = {n["id"]: n for n in snapshot["state"]["window"]["nodes"]}
            assert window["Svc"]["byClass"] == {"Alpha": {"arrivals": [8.0, 2.0], "served": [8.0, 2.0]}}
        async with connect(stream) as bad:  # a malformed `classes` closes 1008, like a malformed `nodes`
            await bad.send(orjson.dumps({"type": "subscribe", "since": None, "classes": "Alpha"}).decode())
            with pytest.raises(ConnectionClosed):
                await recv(bad)
            assert bad.close_code == 1008
        assert (await http.post(f"/v1/runs/{RUN}/close")).status_code == 202

    # the CLI: replays the finished run's history and exits 0 at the close
    raw = flowtime("stream", "runs", RUN, "--json", "--class", "Alpha", "--url", service.url)
    assert raw.returncode == 0, raw.stderr
    runs = [m for m in map(json.loads, raw.stdout.splitlines()) if m.get("type") == "run_update"]
    assert len(runs) >= 2 and all(set(nodes(m)["Svc"]["byClass"]) == {"Alpha"} for m in runs)
    table = flowtime("stream", "runs", RUN, "--class", "Alpha", "--url", service.url)
    assert table.returncode == 0, table.stderr
    rows = {
        r[0]: r[1:] for line in table.stdout.splitlines() if len(r := [x.strip() for x in line.split("│")[1:-1]]) > 3
    }
    assert "class Alpha" in table.stdout and "completed" in table.stdout
    assert rows["Svc"][1:4] == ["Alpha", "2", "2"]  # kind, values, arrivals, served: bin 1's Alpha, not 9
    assert rows["Plain"][1:3] == ["total (no classes)", "6"]
