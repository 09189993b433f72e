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
        classes, bearing = msg.pop("byClass", {}), set(self.layout.get("byClass", ()))
        for k, p in enumerate(where):
            delta: dict[str, Any] = {"nodeId": ids[p], "kind": kinds[p]}
            for name, columns in sections.items():
                delta[name] = _cells(columns, sparse.get(name, {}), k, p)
            if p in bearing:  # a class-bearing node: its classes that have a field at p
                class_gaps = sparse.get("byClass", {})
                cells = {c: _cells(columns, class_gaps.get(c, {}), k, p) for c, columns in classes.items()}
                delta["byClass"] = {c: values for c, values in cells.items() if values}
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


def _cells(columns: dict[str, Any], gaps: dict[str, list[int]], k: int, p: int) -> dict[str, Any]:
    """Node p's fields (the k-th carried) of a section: arrays or single values, minus sparse gaps."""
    return {
        f: (col[k] if isinstance(col, list) else col) for f, col in columns.items() if f not in gaps or p in gaps[f]
    }


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


# -- byClass (issue 14) ----------------------------------------------------------------------------
def class_update(seq: int, split: dict[str, tuple[float, float]], plain: float = 1.0) -> dict[str, Any]:
    """Class-bearing nodes n with (Alpha, Beta) = split[n] (totals their sums), then class-less P."""
    ev = update(seq, seq - 1, {n: a + b for n, (a, b) in split.items()} | {"P": plain})
    for d in ev["deltas"][:-1]:
        a, b = split[d["nodeId"]]
        d["byClass"] = {"Alpha": {"arrivals": a, "served": min(a, 10.0)}, "Beta": {"arrivals": b, "served": b}}
    return ev


def expected(ev: dict[str, Any], nodes: set[str] | None, classes: set[str] | None) -> dict[str, Any]:
    """The full event a client with these filters receives (written out here, not the hub's code)."""
    deltas = [dict(d) for d in ev["deltas"] if nodes is None or d["nodeId"] in nodes]
    for d in deltas:
        if classes is not None and "byClass" in d:
            d["byClass"] = {c: v for c, v in d["byClass"].items() if c in classes}
    return ev | {"deltas": deltas}


def test_compact_updates_carry_by_class_per_class_columns_and_the_classes_filter() -> None:
    events = [
        class_update(1, {"A": (1.0, 2.0), "B": (3.0, 4.0)}),
        class_update(2, {"A": (1.0, 2.0), "B": (3.0, 4.0)}, plain=2.0),  # only the class-less node
        class_update(3, {"A": (2.0, 1.0), "B": (3.0, 4.0)}, plain=2.0),  # A's classes moved, not its totals
    ]
    filters: list[tuple[set[str] | None, set[str] | None]] = [
        (None, None),
        (None, {"Alpha"}),
        ({"B", "P"}, {"Beta", "Nope"}),
        (None, {"Nope"}),  # an unknown class matches nothing: class-bearing nodes keep `byClass: {}`
    ]
    changed_last = [[0], [0], [], []]  # the third update changed only A's classes: a delta of A where seen
    hub = Hub()
    subs = [hub.subscribe(RUN, None, nodes, compact=True, classes=classes) for nodes, classes in filters]
    for ev in events:
        publish(hub, ev)
    for sub, (nodes, classes), idx in zip(subs, filters, changed_last, strict=True):
        reader = Reader()
        got = [d.payload for d in deliveries(sub)]
        assert [reader.read(g) for g in got] == [expected(ev, nodes, classes) for ev in events]
        assert orjson.loads(got[2])["idx"] == idx
    first, *_ = (orjson.loads(d.payload) for d in deliveries(hub.subscribe(RUN, None, None, compact=True)))
    assert first["layout"]["byClass"] == [0, 1]  # A and B carry byClass, P does not
    assert first["layout"]["sparse"]["byClass"]["Alpha"] == {"arrivals": [0, 1], "served": [0, 1]}
    assert first["byClass"]["Alpha"] == {"arrivals": [1.0, 3.0, None], "served": [1.0, 3.0, None]}
    assert first["metrics"]["arrivals"] == [3.0, 7.0, 1.0]  # totals untouched
    alpha = orjson.loads(deliveries(hub.subscribe(RUN, None, None, compact=True, classes=["Alpha"]))[0].payload)
    assert list(alpha["byClass"]) == ["Alpha"] and list(alpha["layout"]["sparse"]["byClass"]) == ["Alpha"]
    nope = orjson.loads(deliveries(hub.subscribe(RUN, None, None, compact=True, classes=["Nope"]))[0].payload)
    assert "byClass" not in nope and nope["layout"]["byClass"] == [0, 1]


def test_compact_tables_share_per_filter_and_an_empty_class_entry_has_no_compact_form() -> None:
    hub = Hub()
    a, b = (hub.subscribe(RUN, None, None, compact=True, classes=["Beta"]) for _ in range(2))
    publish(hub, class_update(1, {"A": (1.0, 2.0)}))
    (da,), (db,) = deliveries(a), deliveries(b)
    assert da.payload is db.payload and da.text is db.text  # encoded once per (nodes, classes)
    odd = class_update(2, {"A": (1.0, 2.0)})
    odd["deltas"][0]["byClass"]["Alpha"] = {}
    assert CompactTable.of_event(odd) is None
    data = publish(hub, odd)
    (sent,) = deliveries(a)
    assert orjson.loads(sent.payload) == expected(odd, None, {"Beta"}) and sent.payload != data
