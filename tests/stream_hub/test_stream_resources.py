"""Bounded stream resources (issue 12 #4): the encoding cache, connection limits, shared snapshots."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import orjson
import pytest

from engine_live.errors import TooManyConnectionsError
from engine_live.protocol import CloseCode, close_code_for
from stream_hub.connections import ConnectionGate, address_key, token_key
from stream_hub.encodings import EventEncodings, SplitEvent
from stream_hub.history import HubEvent
from stream_hub.hub import Hub, HubLimits
from stream_hub.lru import ENTRY_OVERHEAD, ByteLRU
from stream_hub.snapshots import Snapshot, SnapshotCache
from stream_hub.subscription import Delivery, Outgoing, Subscription

RUN = "r1"
NODES = tuple(f"N{i}" for i in range(40))


def run_update(seq: int, epoch: str = "e1") -> dict[str, Any]:
    deltas = [{"nodeId": n, "kind": "service", "metrics": {"served": seq + i}} for i, n in enumerate(NODES)]
    head = {"v": 1, "type": "run_update", "runId": RUN, "epoch": epoch, "seq": seq, "binIndex": seq - 1}
    return head | {"deltas": deltas}


def publish(hub: Hub, seqs: range, epoch: str = "e1") -> None:
    for s in seqs:
        ev = run_update(s, epoch)
        hub.publish(RUN, ev, orjson.dumps(ev))


def drain(sub: Subscription) -> list[Outgoing]:
    out: list[Outgoing] = []
    while (item := sub.poll()) is not None:
        out.append(item)
    return out


# -- the byte-bounded LRU --------------------------------------------------------------------------
def test_lru_keeps_within_its_budget_and_evicts_the_least_recently_used() -> None:
    cache: ByteLRU[bytes] = ByteLRU(3 * (100 + ENTRY_OVERHEAD))
    for key in "abc":
        cache.put(key, b"x" * 100)
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", b"y" * 100)
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("d") is not None
    assert cache.size_bytes <= cache.max_bytes and len(cache) == 3
    cache.put("huge", b"z" * cache.max_bytes)  # larger than the whole budget: not kept, nothing evicted
    assert cache.get("huge") is None and len(cache) == 3
    assert cache.stats().evictions == 1


# -- encodings: filters are bounded by bytes --------------------------------------------------------
def test_a_filter_keeps_only_its_nodes_and_clients_with_the_same_filter_share_it() -> None:
    enc = EventEncodings(1 << 20)
    ev = HubEvent.from_event(run_update(1), orjson.dumps(run_update(1)), seqd=True)
    nodes = frozenset({"N3", "N7"})
    first = enc.payload(ev, nodes)
    assert enc.payload(ev, nodes) is first
    body = orjson.loads(first)
    assert [d["nodeId"] for d in body["deltas"]] == ["N3", "N7"]
    assert {k: v for k, v in body.items() if k != "deltas"} == {k: v for k, v in run_update(1).items() if k != "deltas"}
    assert enc.text(ev, nodes) == first.decode() and enc.text(ev, nodes) is enc.text(ev, nodes)
    assert enc.payload(ev, None) is ev.data and enc.text(ev, None) is enc.text(ev, None)
    skipped = orjson.loads(enc.payload(ev, nodes, (4, 2)))
    assert skipped["skipped"] == [2, 4] and len(skipped["deltas"]) == 2


def test_split_event_without_other_fields_and_odd_deltas() -> None:
    split = SplitEvent.of(orjson.dumps({"deltas": [{"nodeId": "A"}, 7, {"nodeId": 3}, {"nodeId": "B"}]}))
    assert orjson.loads(split.keep(frozenset({"A", "B", "3"}))) == {"deltas": [{"nodeId": "A"}, {"nodeId": "B"}]}


def test_distinct_filters_cannot_grow_memory_beyond_the_budget() -> None:
    """The issue: 20 clients with distinct filters each left one encoding per event in history."""
    budget = 64 * 1024
    hub = Hub(HubLimits(encoding_cache_bytes=budget))
    publish(hub, range(1, 101))
    history_bytes = hub.stats().history_bytes
    for k in range(20):
        sub = hub.subscribe(RUN, None, NODES[k : k + 20])  # 20 distinct filters, each replays history
        items = drain(sub)
        assert len(items) == 100
        for item in items:
            assert isinstance(item, Delivery)
            assert len(orjson.loads(item.text)["deltas"]) == 20
        hub.unsubscribe(sub)
    stats = hub.stats()
    assert stats.encoding_cache_bytes <= budget < history_bytes  # without the bound: ~10× the history
    assert stats.encoding_cache_evictions > 0


# -- connection limits ---------------------------------------------------------------------------
def test_gate_limits_in_total_and_per_key_and_gives_places_back() -> None:
    gate = ConnectionGate(max_total=3, max_per_key=2)
    a1, a2 = gate.admit("a"), gate.admit("a")
    with pytest.raises(TooManyConnectionsError) as refused:
        gate.admit("a")
    assert close_code_for(refused.value) is CloseCode.TRY_AGAIN_LATER and refused.value.http_status == 429
    b1 = gate.admit("b")
    with pytest.raises(TooManyConnectionsError):
        gate.admit("c")  # the total
    a1.release()
    a1.release()  # idempotent
    assert gate.stats().open == 2
    c1 = gate.admit("c")
    b1.rekey("a")  # a rekey does not add to the total
    with pytest.raises(TooManyConnectionsError):
        c1.rekey("a")
    assert gate.stats() == type(gate.stats())(open=3, keys=2, max_per_key_open=2, refused=3)
    for admission in (a2, b1, c1):
        admission.release()
    assert gate.stats().open == 0 and gate.stats().keys == 0


def test_rekey_moves_a_connection_to_its_token() -> None:
    gate = ConnectionGate(max_total=10, max_per_key=1)
    pending = gate.admit(address_key("10.0.0.1"))
    pending.rekey(token_key("secret"))
    assert "secret" not in pending.key
    other = gate.admit(address_key("10.0.0.1"))  # the address bucket is free again
    with pytest.raises(TooManyConnectionsError):
        other.rekey(token_key("secret"))  # the token's one place is taken
    assert other.key == address_key("10.0.0.1")
    pending.release()
    other.release()
    assert gate.stats().open == 0 and gate.stats().keys == 0


# -- snapshots -----------------------------------------------------------------------------------
async def test_concurrent_subscribers_share_one_build_and_later_ones_reuse_it() -> None:
    cache = SnapshotCache(1 << 20)
    started, release = asyncio.Event(), asyncio.Event()
    builds = 0

    async def build() -> Snapshot:
        nonlocal builds
        builds += 1
        started.set()
        await release.wait()
        return Snapshot("e1", 5, b"{}", 0.0)

    waiters = [asyncio.create_task(cache.get(RUN, lambda s: True, build)) for _ in range(10)]
    await started.wait()
    release.set()
    results = await asyncio.gather(*waiters)
    assert builds == 1 and all(r is results[0] for r in results)
    assert await cache.get(RUN, lambda s: True, build) is results[0]
    assert await cache.get(RUN, lambda s: False, build) is not results[0] and builds == 2


async def test_a_cancelled_waiter_does_not_cancel_the_build_for_the_others() -> None:
    cache = SnapshotCache(1 << 20)
    release = asyncio.Event()

    async def build() -> Snapshot:
        await release.wait()
        return Snapshot("e1", 1, b"{}", 0.0)

    first = asyncio.create_task(cache.get(RUN, lambda s: True, build))
    second = asyncio.create_task(cache.get(RUN, lambda s: True, build))
    await asyncio.sleep(0)  # both are waiting on the build (one loop step, not a timing wait)
    first.cancel()
    release.set()
    assert (await second).seq == 1
    assert first.cancelled()


async def test_snapshot_work_runs_in_its_own_thread() -> None:
    cache = SnapshotCache()
    name = await cache.in_thread(lambda: threading.current_thread().name)
    assert name.startswith("ws-snapshot") and name != threading.current_thread().name
    cache.close()


async def test_snapshot_cache_is_bounded_and_forgets_runs() -> None:
    hub = Hub(HubLimits(snapshot_cache_bytes=2 * (1000 + ENTRY_OVERHEAD)))

    async def build() -> Snapshot:
        return Snapshot("e1", 1, b"x" * 1000, 0.0)

    for run in ("a", "b", "c"):
        await hub.snapshots.get(run, lambda s: True, build)
    stats = hub.snapshots.stats()
    assert stats.entries == 2 and stats.bytes <= stats.max_bytes and stats.evictions == 1
    hub.reset_epoch("c", "e2")
    hub.drop_run("b")
    assert hub.snapshots.stats().entries == 0


def test_an_older_shared_snapshot_is_completed_from_history() -> None:
    hub = Hub(HubLimits(history_events=50))
    publish(hub, range(1, 21))
    sub = hub.subscribe(RUN, ("e0", 3), None)  # unknown epoch: needs a snapshot
    assert not sub.recovered
    publish(hub, range(21, 24))  # queued live
    assert hub.can_resume(RUN, "e1", 15)
    sub.resume_after_snapshot("e1", 15)  # the shared snapshot is older than the subscription
    seqs = [orjson.loads(i.payload)["seq"] for i in drain(sub) if isinstance(i, Delivery)]
    assert seqs == list(range(16, 24))
    assert not hub.can_resume(RUN, "e0", 15) and not hub.can_resume("other", "e1", 1)
