"""`subscribe {classes}` (issue 14, SPEC §14): every `byClass` a client receives — in `run_update`s
and in its snapshot — keeps only its classes; totals are untouched; each filter is encoded once."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine_live.errors import StreamError
from engine_live.protocol import CloseCode, close_code_for, parse_client_message, parse_subscribe, subscribe_message
from engine_live.subscribe_options import MAX_CLASSES
from stream_hub.hub import Hub, HubLimits
from stream_hub.ports import SystemClock
from stream_hub.snapshot_source import SnapshotSource
from stream_hub.subscription import Delivery, Subscription
from tests.stream_hub.one_run import RUN, OneRunLookup

BY_CLASS = {"Alpha": {"arrivals": 4.0, "served": 3.0}, "Beta": {"arrivals": 6.0, "served": 6.0}}


def node(node_id: str, classes: bool, arrivals: float = 10.0) -> dict[str, Any]:
    """A delta (or a state node, with `id`) with totals, derived values and, when `classes`, byClass."""
    out: dict[str, Any] = {"nodeId": node_id, "kind": "service", "metrics": {"arrivals": arrivals, "served": 9.0}}
    out["derived"] = {"utilization": 0.5, "color": "green"}
    return out | ({"byClass": BY_CLASS} if classes else {})


def run_update(seq: int, deltas: list[dict[str, Any]]) -> dict[str, Any]:
    head = {"v": 1, "type": "run_update", "runId": RUN, "epoch": "e1", "seq": seq, "binIndex": seq - 1}
    return head | {"status": "live", "revision": 0, "deltas": deltas}


def publish(hub: Hub, ev: dict[str, Any]) -> bytes:
    data = orjson.dumps(ev)
    hub.publish(RUN, ev, data)
    return data


def deliveries(sub: Subscription) -> list[Delivery]:
    out = []
    while (item := sub.poll()) is not None:
        if isinstance(item, Delivery):
            out.append(item)
    return out


def by_class(body: dict[str, Any]) -> dict[str, Any]:
    """nodeId → its byClass (absent: no key) of a decoded run_update."""
    return {d["nodeId"]: d["byClass"] for d in body["deltas"] if "byClass" in d}


# -- the message -----------------------------------------------------------------------------------
def test_subscribe_classes_is_parsed_and_a_malformed_one_is_a_stream_error() -> None:
    assert parse_subscribe({"type": "subscribe"}).classes is None
    assert parse_subscribe({"type": "subscribe", "classes": None}).classes is None
    assert parse_subscribe(subscribe_message(None, None, classes=["Alpha", "Nope"])).classes == ["Alpha", "Nope"]
    assert parse_subscribe({"type": "subscribe", "classes": []}).classes == []
    assert "classes" not in subscribe_message(None, ["A"]) and "format" not in subscribe_message(None, None, classes=[])
    malformed: list[Any] = ["Alpha", {"Alpha": 1}, [1], ["Alpha", None], [""], ["a b"], ["Alpha\n"]]
    malformed.append([f"C{i}" for i in range(MAX_CLASSES + 1)])
    for classes in malformed:
        with pytest.raises(StreamError) as err:
            parse_client_message(orjson.dumps({"type": "subscribe", "since": None, "classes": classes}))
        assert err.value.code == "bad_message" and close_code_for(err.value) is CloseCode.POLICY_VIOLATION


# -- run_update deltas -----------------------------------------------------------------------------
def test_a_classes_filter_trims_every_by_class_and_leaves_totals_and_class_less_nodes() -> None:
    hub = Hub()
    alpha = [hub.subscribe(RUN, None, None, classes=["Alpha"]) for _ in range(2)]
    both = hub.subscribe(RUN, None, ["B", "P"], classes=["Beta", "Nope"])
    unknown = hub.subscribe(RUN, None, None, classes=["Nope"])
    plain = hub.subscribe(RUN, None, None)
    ev = run_update(1, [node("A", True), node("B", True, 7.0), node("P", False)])
    data = publish(hub, ev)
    (a1,), (a2,) = deliveries(alpha[0]), deliveries(alpha[1])
    body = orjson.loads(a1.payload)
    assert by_class(body) == {"A": {"Alpha": BY_CLASS["Alpha"]}, "B": {"Alpha": BY_CLASS["Alpha"]}}
    assert [d["metrics"] for d in body["deltas"]] == [d["metrics"] for d in ev["deltas"]]  # totals untouched
    assert body["deltas"][2] == ev["deltas"][2] and {k: v for k, v in body.items() if k != "deltas"} == {
        k: v for k, v in ev.items() if k != "deltas"
    }
    assert a1.payload is a2.payload and a1.text is a2.text and orjson.loads(a1.text) == body  # once per filter
    (b,) = deliveries(both)
    assert orjson.loads(b.text) == orjson.loads(b.payload)
    assert [d["nodeId"] for d in orjson.loads(b.payload)["deltas"]] == ["B", "P"]
    assert by_class(orjson.loads(b.payload)) == {"B": {"Beta": BY_CLASS["Beta"]}}
    assert by_class(orjson.loads(deliveries(unknown)[0].payload)) == {"A": {}, "B": {}}  # still class-bearing
    assert deliveries(plain)[0].payload is data
    skipped = Delivery(a1.event, None, (5, 3), a1.encodings, classes=frozenset({"Beta"}))
    assert by_class(orjson.loads(skipped.payload))["A"] == {"Beta": BY_CLASS["Beta"]}
    assert orjson.loads(skipped.text)["skipped"] == [3, 5]


def test_events_without_by_class_go_out_as_published() -> None:
    hub = Hub()
    sub = hub.subscribe(RUN, None, None, classes=["Alpha"])
    data = publish(hub, run_update(1, [node("P", False)]))
    warning = {"v": 1, "type": "warning_update", "runId": RUN, "epoch": "e1", "seq": 2, "op": "add", "warning": {}}
    warning_data = publish(hub, warning)
    first, second = deliveries(sub)
    assert first.payload is data and second.payload is warning_data


# -- snapshots -------------------------------------------------------------------------------------
class Engine(OneRunLookup):
    """A RunLookup whose live state has class-bearing nodes (bin and window), counting builds."""

    def __init__(self, hub: Hub) -> None:
        super().__init__(hub)
        self.builds = 0

    def snapshot_state(self, run_id: str) -> dict[str, Any]:
        self.builds += 1
        window = [{"id": "A", "metrics": {"arrivals": [10.0]}, "byClass": {"Alpha": {"arrivals": [4.0]}}}]
        nodes = [{"id": n["nodeId"]} | n for n in (node("A", True), node("P", False))]
        return {"runId": run_id, "epoch": "e1", "seq": self.seq, "nodes": nodes, "window": {"nodes": window}}

    def publish(self, n: int) -> None:
        for _ in range(n):
            self.seq += 1
            publish(self.hub, run_update(self.seq, [node("A", True)]))


async def test_the_snapshot_state_is_trimmed_once_per_filter_from_the_shared_snapshot() -> None:
    hub = Hub(HubLimits(history_events=2))
    engine = Engine(hub)
    engine.publish(5)  # seq 1 has left history: `since: null` needs a snapshot
    source = SnapshotSource(hub, engine, RUN, SystemClock(), max_age_s=60.0, text_frames=True)
    subs = [hub.subscribe(RUN, None, None, classes=c) for c in (["Alpha"], ["Alpha"], None, ["Nope"])]
    snaps = [await source.take(sub) for sub in subs]
    states = [orjson.loads(s.frame)["state"] for s in snaps]
    assert states[0]["nodes"][0]["byClass"] == {"Alpha": BY_CLASS["Alpha"]}
    assert states[0]["nodes"][0]["metrics"] == node("A", True)["metrics"] and "byClass" not in states[0]["nodes"][1]
    assert states[0]["window"]["nodes"][0]["byClass"] == {"Alpha": {"arrivals": [4.0]}}
    assert states[2]["nodes"][0]["byClass"] == BY_CLASS  # no filter: the shared snapshot itself
    assert states[3]["nodes"][0]["byClass"] == {} and states[3]["window"]["nodes"][0]["byClass"] == {}
    assert snaps[0] is snaps[1] and engine.builds == 1 and hub.snapshots.builds == 1  # trimmed once, built once
    assert all((s.epoch, s.seq) == ("e1", 5) for s in snaps) and all(sub.last_seq == 5 for sub in subs)
    hub.snapshots.close()
