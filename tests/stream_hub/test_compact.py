"""Compact `run_update`s (issue 16): lossless, shared between clients, keyed to each client's base."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine_live.errors import StreamError
from engine_live.protocol import parse_subscribe, subscribe_message
from stream_hub.compact import CompactTable, compact_update
from stream_hub.hub import Hub
from stream_hub.subscription import Delivery, Outgoing, Subscription

RUN = "r1"
DERIVED = {"utilization": 0.5, "queueTimeMs": None, "slaMet": True, "color": "green", "colorReason": "utilization"}


def update(seq: int, bin_index: int, values: dict[str, float], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A run_update whose node n has arrivals = values[n] (and the fields of `extra[n]`, if any)."""
    deltas = []
    for node, v in values.items():
        metrics: dict[str, Any] = {"arrivals": v, "served": min(v, 10.0)}
        metrics.update((extra or {}).get(node, {}))
        color = "red" if v > 10 else "green"
        deltas.append({"nodeId": node, "kind": "service", "metrics": metrics, "derived": {**DERIVED, "color": color}})
    head = {"v": 1, "type": "run_update", "runId": RUN, "epoch": "e1", "seq": seq, "binIndex": bin_index}
    return head | {"status": "live", "revision": 0, "deltas": deltas}


class Reader:
    """A client's reference decoder: every compact update it receives, in order → the full event."""

    def __init__(self) -> None:
        self.layout: dict[str, Any] | None = None
        self.last: tuple[int, list[dict[str, Any]]] | None = None

    def read(self, data: bytes) -> dict[str, Any]:
        msg = orjson.loads(data)
        assert msg.pop("format") == "compact"
        self.layout = msg.pop("layout", self.layout)
        assert self.layout is not None
        if "series" in self.layout:
            return self._series(msg)
        ids, kinds = self.layout["nodes"], self.layout["kinds"]
        sparse = self.layout.get("sparse", {})
        if "base" in msg:
            base = msg.pop("base")
            assert self.last is not None and self.last[0] == base, "a delta on an update this client does not hold"
            deltas = [dict(d) for d in self.last[1]]
            where = msg.pop("idx")
        else:
            deltas, where = [{} for _ in ids], list(range(len(ids)))
        sections = {name: msg.pop(name) for name in ("metrics", "derived")}
        for k, p in enumerate(where):
            delta: dict[str, Any] = {"nodeId": ids[p], "kind": kinds[p]}
            for name, columns in sections.items():
                gaps = sparse.get(name, {})
                delta[name] = {
                    f: (col[k] if isinstance(col, list) else col)
                    for f, col in columns.items()
                    if f not in gaps or p in gaps[f]
                }
            deltas[p] = delta
        self.last = (msg["seq"], deltas)
        return msg | {"deltas": deltas}

    def _series(self, msg: dict[str, Any]) -> dict[str, Any]:
        assert self.layout is not None
        ids = self.layout["series"]
        values = msg.pop("values")["value"]
        held = dict(self.last[1][0]["series"]) if "base" in msg and self.last else {}
        where = msg.pop("idx", list(range(len(ids))))
        msg.pop("base", None)
        for k, p in enumerate(where):
            held[ids[p]] = values[k] if isinstance(values, list) else values
        self.last = (msg["seq"], [{"series": held}])
        return msg | {"deltas": [{"series": {i: held[i] for i in ids}}]}


def publish(hub: Hub, ev: dict[str, Any]) -> bytes:
    data = orjson.dumps(ev)
    hub.publish(RUN, ev, data)
    return data


def deliveries(sub: Subscription) -> list[Delivery]:
    out: list[Outgoing] = []
    while (item := sub.poll()) is not None:
        out.append(item)
    return [i for i in out if isinstance(i, Delivery)]


def test_compact_updates_expand_to_the_full_events_and_send_only_changed_nodes() -> None:
    events = [
        update(1, 0, {"A": 1.0, "B": 2.0, "C": 3.0}),
        update(2, 1, {"A": 1.0, "B": 20.0, "C": 3.0}),  # only B changed (arrivals and colour)
        update(3, 2, {"A": 1.0, "B": 20.0, "C": 3.0}),  # nothing changed
        update(4, 3, {"A": 1.0, "B": 20.0, "C": 3.0, "D": 4.0}),  # a node added: a new layout
        update(5, 4, {"A": 1.0, "B": 2.0, "C": 3.0, "D": 4.0}, {"D": {"queueDepth": 7.0}}),  # sparse field
        update(6, 5, {"A": 5.0, "B": 2.0, "C": 3.0, "D": 4.0}, {"D": {"queueDepth": 7.0}}),
    ]
    hub = Hub()
    sub = hub.subscribe(RUN, None, None, compact=True)
    for ev in events:
        publish(hub, ev)
    reader = Reader()
    got = [orjson.loads(d.payload) for d in deliveries(sub)]
    assert [reader.read(orjson.dumps(g)) for g in got] == events
    assert "layout" in got[0] and "base" not in got[0]
    assert (got[1]["base"], got[1]["idx"]) == (1, [1])
    assert got[1]["metrics"] == {"arrivals": [20.0], "served": [10.0]} and got[1]["derived"]["color"] == ["red"]
    assert got[2]["idx"] == [] and got[2]["base"] == 2
    assert "layout" in got[3] and "base" not in got[3]
    assert got[4]["layout"]["sparse"] == {"metrics": {"queueDepth": [3]}}
    assert got[5]["idx"] == [0]
    assert got[0]["derived"]["queueTimeMs"] is None and got[0]["derived"]["utilization"] == 0.5  # constant columns


def test_clients_that_keep_up_share_one_encoding_and_a_lagging_one_gets_its_own_base() -> None:
    hub = Hub()
    a = hub.subscribe(RUN, None, None, compact=True)
    b = hub.subscribe(RUN, None, None, compact=True)
    full = hub.subscribe(RUN, None, None)
    data = [publish(hub, update(s, s - 1, {"A": float(s), "B": 1.0})) for s in (1, 2)]
    da, db, df = deliveries(a), deliveries(b), deliveries(full)
    assert [x.payload for x in df] == data  # the publisher's bytes for clients that did not ask
    assert all(x.payload is y.payload for x, y in zip(da, db, strict=True))  # encoded once, shared
    assert da[1].text is db[1].text
    late = Hub()  # no compact client while publishing: the tables come from the bytes, same result
    for s in (1, 2):
        ev = update(s, s - 1, {"A": float(s), "B": 1.0})
        late.publish(RUN, ev, orjson.dumps(ev))
    replayed = deliveries(late.subscribe(RUN, None, None, compact=True))
    assert [x.payload for x in replayed] == [x.payload for x in da]
    b.request_resync()  # b fell behind: it gets a snapshot, then a key update again
    publish(hub, update(3, 2, {"A": 3.0, "B": 1.0}))
    (na,), (nb,) = deliveries(a), deliveries(b)
    assert orjson.loads(na.payload)["base"] == 2 and "layout" not in orjson.loads(na.payload)
    assert "layout" in orjson.loads(nb.payload) and "base" not in orjson.loads(nb.payload)


def test_other_events_filters_and_skipped_with_compact() -> None:
    hub = Hub()
    sub = hub.subscribe(RUN, None, ["B"], compact=True)
    warning = {"v": 1, "type": "warning_update", "runId": RUN, "epoch": "e1", "seq": 2, "op": "add", "warning": {}}
    publish(hub, update(1, 0, {"A": 1.0, "B": 2.0}))
    warning_data = publish(hub, warning)
    first, second = deliveries(sub)
    assert second.payload is warning_data and second.text == warning_data.decode()
    body = orjson.loads(first.payload)
    assert body["layout"]["nodes"] == ["B"] and body["metrics"]["arrivals"] == [2.0]
    skipped = Delivery(first.event, None, (7, 5), first.encodings, True, None)
    assert orjson.loads(skipped.payload)["skipped"] == [5, 7]
    assert orjson.loads(skipped.text)["skipped"] == [5, 7]


def test_a_model_without_topology_and_events_without_node_deltas() -> None:
    series = {"v": 1, "type": "run_update", "runId": RUN, "epoch": "e1", "seq": 1, "binIndex": 0}
    one = series | {"deltas": [{"series": {"x": 1.0, "y": 2.0}}]}
    two = series | {"seq": 2, "binIndex": 1, "deltas": [{"series": {"x": 1.0, "y": 3.0}}]}
    t1, t2 = CompactTable.of(orjson.dumps(one)), CompactTable.of(orjson.dumps(two))
    assert t1 is not None and t2 is not None
    reader = Reader()
    assert reader.read(compact_update(t1, None)) == one
    delta = compact_update(t2, (1, t1))
    assert orjson.loads(delta)["idx"] == [1] and reader.read(delta) == two
    assert CompactTable.of(orjson.dumps(series | {"deltas": [{"odd": 1}]})) is None
    hub = Hub()
    sub = hub.subscribe(RUN, None, None, compact=True)
    odd = publish(hub, series | {"deltas": [{"odd": 1}]})
    assert deliveries(sub)[0].payload == odd  # no compact form: sent as it is


def test_subscribe_format_is_checked() -> None:
    assert parse_subscribe({"type": "subscribe"}).format == "full"
    assert parse_subscribe(subscribe_message(None, None, "compact")).format == "compact"
    assert "format" not in subscribe_message(None, None)
    with pytest.raises(StreamError):
        parse_subscribe({"type": "subscribe", "format": "tiny"})
