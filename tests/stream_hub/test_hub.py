"""Hub resume rules, slow-client policy, node filter and client lifecycle (SPEC §7)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from engine_live.errors import IllegalTransitionError
from stream_hub.hub import Hub, HubLimits
from stream_hub.lifecycle import ClientLifecycle, ClientState
from stream_hub.subscription import Close, Control, Delivery, Heartbeat, Outgoing, Resync, Subscription

RUN = "r1"


def run_update(seq: int, bin_index: int, epoch: str = "e1", nodes: tuple[str, ...] = ("A", "B")) -> dict[str, Any]:
    deltas = [{"nodeId": n, "kind": "service", "metrics": {"served": seq}} for n in nodes]
    return {
        "v": 1,
        "type": "run_update",
        "runId": RUN,
        "epoch": epoch,
        "seq": seq,
        "binIndex": bin_index,
        "deltas": deltas,
    }


def publish_updates(hub: Hub, seqs: range, epoch: str = "e1") -> None:
    for s in seqs:
        ev = run_update(s, s - 1, epoch)
        hub.publish(RUN, ev, orjson.dumps(ev))


def drain(sub: Subscription) -> list[Outgoing]:
    out: list[Outgoing] = []
    while (item := sub.poll()) is not None:
        out.append(item)
        if isinstance(item, Close):
            break
    return out


def seqs_of(items: list[Outgoing]) -> list[int]:
    return [orjson.loads(i.payload)["seq"] for i in items if isinstance(i, Delivery)]


# -- resume rules ------------------------------------------------------------------------------------
def test_cursor_replays_exactly_the_missed_events() -> None:
    hub = Hub()
    publish_updates(hub, range(1, 11))
    sub = hub.subscribe(RUN, ("e1", 4), None)
    assert sub.recovered and (sub.epoch, sub.seq) == ("e1", 10)
    publish_updates(hub, range(11, 13))
    assert seqs_of(drain(sub)) == list(range(5, 13))


def test_replay_shares_the_publishers_bytes() -> None:
    hub = Hub()
    ev = run_update(1, 0)
    data = orjson.dumps(ev)
    hub.publish(RUN, ev, data)
    item = hub.subscribe(RUN, None, None).poll()
    assert isinstance(item, Delivery) and item.payload is data


def test_null_cursor_means_from_seq_one_of_the_current_epoch() -> None:
    hub = Hub()
    publish_updates(hub, range(1, 6))
    sub = hub.subscribe(RUN, None, None)
    assert sub.recovered
    assert seqs_of(drain(sub)) == [1, 2, 3, 4, 5]


def test_null_cursor_when_seq_one_left_history_is_not_recovered() -> None:
    hub = Hub(HubLimits(history_events=3))
    publish_updates(hub, range(1, 6))
    sub = hub.subscribe(RUN, None, None)
    assert not sub.recovered
    sub.resume_after_snapshot("e1", 5)
    publish_updates(hub, range(6, 8))
    assert seqs_of(drain(sub)) == [6, 7]


@pytest.mark.parametrize(
    "since",
    [("e1", 1), ("e0", 8), ("e1", 99), ("e1", -1)],
    ids=["older-than-history", "unknown-epoch", "beyond-head", "negative"],
)
def test_cursors_that_cannot_be_served_whole_are_not_recovered(since: tuple[str, int]) -> None:
    hub = Hub(HubLimits(history_events=5))
    publish_updates(hub, range(1, 11))  # history holds 6..10
    sub = hub.subscribe(RUN, since, None)
    assert not sub.recovered
    assert drain(sub) == []  # never a partial replay: the caller sends a snapshot


def test_cursor_at_the_oldest_boundary() -> None:
    hub = Hub(HubLimits(history_events=5))
    publish_updates(hub, range(1, 11))  # 6..10
    assert hub.subscribe(RUN, ("e1", 5), None).recovered
    assert not hub.subscribe(RUN, ("e1", 4), None).recovered
    assert hub.subscribe(RUN, ("e1", 10), None).recovered  # at head: nothing to replay


def test_history_byte_budget_evicts_oldest() -> None:
    size = len(orjson.dumps(run_update(1, 0)))
    hub = Hub(HubLimits(history_bytes=size * 3 + 1))
    publish_updates(hub, range(1, 7))
    assert hub.stats().history_events == 3
    assert hub.subscribe(RUN, ("e1", 3), None).recovered
    assert not hub.subscribe(RUN, ("e1", 2), None).recovered


def test_seq_gap_in_an_epoch_is_rejected() -> None:
    hub = Hub()
    publish_updates(hub, range(1, 3))
    with pytest.raises(ValueError, match="does not follow"):
        publish_updates(hub, range(4, 5))


def test_unsequenced_events_repeat_the_seq_and_skip_history() -> None:
    hub = Hub()
    publish_updates(hub, range(1, 3))
    sub = hub.subscribe(RUN, ("e1", 2), None)
    progress = {
        "v": 1,
        "type": "progress",
        "runId": RUN,
        "epoch": "e1",
        "seq": 2,
        "watermark": 1,
        "lagBins": 0,
    }
    hub.publish(RUN, progress, orjson.dumps(progress), seqd=False)
    publish_updates(hub, range(3, 4))
    assert hub.stats().history_events == 3
    assert [orjson.loads(i.payload)["type"] for i in drain(sub) if isinstance(i, Delivery)] == [
        "progress",
        "run_update",
    ]


def test_new_epoch_resyncs_subscribers() -> None:
    hub = Hub()
    publish_updates(hub, range(1, 4))
    sub = hub.subscribe(RUN, ("e1", 3), None)
    publish_updates(hub, range(1, 3), epoch="e2")
    assert isinstance(sub.poll(), Resync)
    sub.resume_after_snapshot("e2", 1)
    assert seqs_of(drain(sub)) == [2]
    assert not hub.subscribe(RUN, ("e1", 3), None).recovered


# -- slow-client policy -------------------------------------------------------------------------------
def test_coalescing_drops_superseded_run_updates_and_lists_skipped() -> None:
    hub = Hub(HubLimits(client_queue=4))
    sub = hub.subscribe(RUN, None, None)
    # bins 0,1,0,1,0: the 5th event overflows the bound of 4; bins 0 and 1 keep their latest update
    for seq, b in enumerate([0, 1, 0, 1, 0], start=1):
        ev = run_update(seq, b)
        hub.publish(RUN, ev, orjson.dumps(ev))
    bodies = [orjson.loads(i.payload) for i in drain(sub) if isinstance(i, Delivery)]
    assert [(b["seq"], b["binIndex"], b.get("skipped")) for b in bodies] == [(4, 1, [2]), (5, 0, [1, 3])]
    assert hub.stats().coalesced == 3 and hub.stats().resyncs == 0


def test_overflow_without_coalescing_resyncs_then_4008() -> None:
    hub = Hub(HubLimits(client_queue=3))
    slow = hub.subscribe(RUN, None, None)
    fast = hub.subscribe(RUN, None, None)
    got: list[int] = []
    for s in range(1, 5):  # 4 distinct bins > bound 3; `fast` keeps up
        publish_updates(hub, range(s, s + 1))
        got += seqs_of(drain(fast))
    assert got == [1, 2, 3, 4]
    assert hub.stats().resyncs == 1
    assert isinstance(slow.poll(), Resync)
    slow.resume_after_snapshot("e1", 4)
    for s in range(5, 9):  # overflows again while on probation
        publish_updates(hub, range(s, s + 1))
        got += seqs_of(drain(fast))
    assert slow.poll() == Close(4008, "too slow", urgent=True)
    assert slow.aborted.is_set()
    stats = hub.stats()
    assert (stats.slow_closes, stats.clients) == (1, 1)
    publish_updates(hub, range(9, 10))
    assert got + seqs_of(drain(fast)) == list(range(1, 10))


def test_client_that_caught_up_after_a_resync_gets_another_chance() -> None:
    hub = Hub(HubLimits(client_queue=3))
    sub = hub.subscribe(RUN, None, None)
    publish_updates(hub, range(1, 5))
    assert isinstance(sub.poll(), Resync)
    sub.resume_after_snapshot("e1", 4)
    publish_updates(hub, range(5, 7))
    assert seqs_of(drain(sub)) == [5, 6]  # drained: probation over
    publish_updates(hub, range(7, 11))
    assert isinstance(sub.poll(), Resync)
    assert hub.stats().resyncs == 2 and hub.stats().slow_closes == 0


def test_resync_snapshot_drops_events_it_covers() -> None:
    hub = Hub(HubLimits(client_queue=3))
    sub = hub.subscribe(RUN, None, None)
    publish_updates(hub, range(1, 5))
    publish_updates(hub, range(5, 7))  # queued after the resync
    assert isinstance(sub.poll(), Resync)
    sub.resume_after_snapshot("e1", 5)
    assert seqs_of(drain(sub)) == [6]
    assert sub.last_seq == 6


def test_close_run_delivers_queued_events_then_close() -> None:
    hub = Hub()
    sub = hub.subscribe(RUN, None, None)
    publish_updates(hub, range(1, 3))
    hub.close_run(RUN, 1000)
    publish_updates(hub, range(3, 4))  # after the close: not delivered
    items = drain(sub)
    assert seqs_of(items) == [1, 2] and items[-1] == Close(1000)
    late = hub.subscribe(RUN, None, None)
    assert seqs_of(drain(late)) == [1, 2, 3]


def test_close_all_on_shutdown_keeps_runs_open() -> None:
    hub = Hub()
    sub = hub.subscribe(RUN, None, None)
    hub.close_all()
    assert drain(sub) == [Close(1001, "server shutdown")]
    publish_updates(hub, range(1, 2))
    assert seqs_of(drain(hub.subscribe(RUN, None, None))) == [1]


def test_control_and_heartbeat_jump_the_queue() -> None:
    hub = Hub()
    sub = hub.subscribe(RUN, None, None)
    publish_updates(hub, range(1, 3))
    sub.push_control(b'{"type":"pong"}')
    sub.request_heartbeat()
    items = drain(sub)
    assert isinstance(items[0], Control) and isinstance(items[1], Heartbeat)
    assert seqs_of(items) == [1, 2]


async def test_next_waits_for_a_publish() -> None:
    hub = Hub()
    sub = hub.subscribe(RUN, None, None)
    hub.publish(RUN, run_update(1, 0), orjson.dumps(run_update(1, 0)))
    item = await sub.next()
    assert isinstance(item, Delivery) and item.event.seq == 1


# -- node filter --------------------------------------------------------------------------------------
def test_nodes_filter_trims_deltas_only_and_every_seq_arrives() -> None:
    hub = Hub()
    sub = hub.subscribe(RUN, None, ["B"])
    other = hub.subscribe(RUN, None, ["B"])
    ev1, ev2 = run_update(1, 0, nodes=("A", "B")), run_update(2, 1, nodes=("A",))
    warn = {
        "v": 1,
        "type": "warning_update",
        "runId": RUN,
        "epoch": "e1",
        "seq": 3,
        "op": "add",
        "warning": {"code": "data_gap", "nodeId": "A"},
    }
    for ev in (ev1, ev2, warn):
        hub.publish(RUN, ev, orjson.dumps(ev))
    items = [i for i in drain(sub) if isinstance(i, Delivery)]
    bodies = [orjson.loads(i.payload) for i in items]
    assert [b["seq"] for b in bodies] == [1, 2, 3]
    assert [d["nodeId"] for d in bodies[0]["deltas"]] == ["B"] and bodies[1]["deltas"] == []
    assert bodies[2] == warn
    assert bodies[0] | {"deltas": ev1["deltas"]} == ev1
    first = next(i for i in drain(other) if isinstance(i, Delivery))
    assert first.payload is items[0].payload  # one encoding per distinct filter


# -- lifecycle ----------------------------------------------------------------------------------------
def test_lifecycle_happy_path_and_illegal_transitions() -> None:
    life = ClientLifecycle()
    with pytest.raises(IllegalTransitionError):
        life.advance(ClientState.SUBSCRIBED)
    life.advance(ClientState.AUTHENTICATED)
    life.advance(ClientState.SUBSCRIBED)
    with pytest.raises(IllegalTransitionError):
        life.advance(ClientState.AUTHENTICATED)
    life.close()
    life.close()
    assert life.state is ClientState.CLOSED
    with pytest.raises(IllegalTransitionError):
        life.advance(ClientState.CONNECTING)
