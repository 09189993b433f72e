"""The live engine's snapshot built off the loop equals `GET .../state/live` (compat_api/routes/stream.py).

`LiveLookup.capture_state` copies the bins the body reads on the loop and builds it later from the
copies alone: the body must be the one `LiveApi.state_live` gives at the moment of the capture, also
when the run moved on in between.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from compat_api.compose import build_live_service
from compat_api.live_api import LiveApi
from compat_api.routes.stream import LiveLookup
from compat_api.settings import Settings
from stream_hub.hub import Hub

NODES = 12
RUN = "r1"


def model() -> str:
    sem = "{arrivals: telemetry, served: telemetry, capacity: telemetry}"
    nodes = "\n".join(f"    - {{id: S{i}, kind: service, semantics: {sem}}}" for i in range(NODES))
    grid = 'grid: {binSize: 1, binUnit: minutes, start: "2025-10-07T00:00:00Z"}'
    return f"{grid}\nnodes: []\ntopology:\n  nodes:\n{nodes}\n"


def frames(b: int, extra: int = 0) -> bytes:
    rows = []
    for i in range(NODES):
        if i == 3 and b % 10 == 0:
            continue  # a gap, zero-filled once the watermark passes it: data_gap warnings and masks
        arrivals = 40 + (i * 13 + b * 11) % 90 + extra
        rows.append({"bin": b, "node": f"S{i}", "arrivals": arrivals, "served": min(arrivals, 100), "capacity": 100})
    return b"\n".join(orjson.dumps(r) for r in rows)


async def test_the_captured_body_is_state_live_at_the_capture(tmp_path: Path) -> None:
    svc = build_live_service(Settings(data_dir=tmp_path, fsync=False), hub=Hub())
    await svc.start()
    try:
        api = LiveApi(svc, state_window_max_bins=500)
        await api.create_run({"mode": "live", "model": model(), "options": {"runId": RUN}})
        lookup = LiveLookup(api)
        empty = lookup.capture_state(RUN)
        assert empty() == api.state_live(RUN)  # no bins yet
        for b in range(330):  # more than the 288-bin window plus the 11-bin look-back
            await api.ingest(RUN, frames(b))
        expected = api.state_live(RUN)
        build = lookup.capture_state(RUN)
        await api.ingest(RUN, frames(300, extra=7))  # a correction inside the window rewrites bins 300..
        for b in range(330, 340):  # and the run moves on before the build
            await api.ingest(RUN, frames(b))
        body = build()
        assert body == expected
        assert body["warnings"] and body["window"]["startBin"] == body["lastBin"] - 287  # gaps inside the window
        assert lookup.capture_state(RUN)() == api.state_live(RUN) != expected
    finally:
        await svc.stop()
