"""Metrics: one registry per app, every documented metric rendered (docs/operations.md)."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from compat_api.metrics import Metrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def documented_metrics() -> dict[str, set[str]]:
    """`{metric name: label names}` from the table in docs/operations.md."""
    out: dict[str, set[str]] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)]
        if len(cells) > 4 and re.fullmatch(r"`flowtime_\w+`", cells[1]):
            # "–", "`run_id`", "`topic`, `partition`" or "`sink` = `websocket` \| `kafka`"
            out[cells[1].strip("`")] = {
                m.group(1) for part in cells[3].split(",") if (m := re.match(r"`(\w+)`", part.strip()))
            }
    return out


def sample_names(text: str) -> set[str]:
    return {s.name for fam in text_string_to_metric_families(text) for s in fam.samples} | {
        line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")
    }


def exercised() -> Metrics:
    m = Metrics(clock=lambda: 1000.0)
    m.ingested_frames.labels(run_id="r1").inc(3)
    m.ingested_bins.labels(run_id="r1").inc()
    m.ingest_queue_depth.set(5)
    m.ingest_queue_capacity.set(100_000)
    m.set_position("r1", watermark=12, last_bin=10)
    m.ingest_to_publish_seconds.observe(0.004)
    m.events_published.labels(sink="websocket").inc()
    m.websocket_clients.inc()
    m.websocket_drops.labels(reason="superseded").inc()
    m.snapshot_committed("r1", duration_s=0.2, size_bytes=4096)
    m.recovery_runs.labels(state="done").set(1)
    m.recovery_bins.labels(state="todo").set(0)
    m.kafka_consumer_lag.labels(topic="flowtime.telemetry", partition="0").set(7)
    m.live_runs.labels(status="live").set(1)
    return m


def test_docs_list_the_metrics() -> None:
    assert len(documented_metrics()) >= 16


def test_render_contains_every_documented_metric_with_its_labels() -> None:
    body, content_type = exercised().render()
    text = body.decode()
    assert content_type.startswith("text/plain")
    names = sample_names(text)
    for name, labels in documented_metrics().items():
        assert name in names or f"{name}_bucket" in names, name
        for label in labels:
            assert re.search(rf"^{name}(_bucket)?\{{[^}}]*\b{label}=", text, re.M), (name, label)


def test_every_rendered_metric_is_documented() -> None:
    documented = documented_metrics()
    text = exercised().render()[0].decode()
    for fam in text_string_to_metric_families(text):
        base = fam.name if fam.type != "counter" else f"{fam.name}_total"
        if fam.name.endswith("_created"):
            continue
        assert base in documented, base


def test_apps_get_separate_registries() -> None:
    a, b = Metrics(), Metrics()
    a.ingested_frames.labels(run_id="r1").inc(2)
    assert 'flowtime_ingested_frames_total{run_id="r1"} 2.0' in a.render()[0].decode()
    assert 'run_id="r1"' not in b.render()[0].decode()


def test_snapshot_age_is_computed_from_the_clock_at_scrape_time() -> None:
    now = [1000.0]
    m = Metrics(clock=lambda: now[0])
    m.snapshot_committed("r1", duration_s=0.1, size_bytes=10)
    now[0] = 1042.5
    assert 'flowtime_snapshot_age_seconds{run_id="r1"} 42.5' in m.render()[0].decode()


def test_forget_run_drops_its_series() -> None:
    m = exercised()
    m.forget_run("r1")
    m.forget_run("r1")  # twice is harmless
    assert 'run_id="r1"' not in m.render()[0].decode()


def test_fixed_label_values_show_from_the_first_scrape() -> None:
    text = Metrics().render()[0].decode()
    for sink in ("websocket", "kafka", "log"):
        assert f'flowtime_events_published_total{{sink="{sink}"}} 0.0' in text
    assert 'flowtime_live_runs{status="recovering"} 0.0' in text


def test_observe_ingest_counts_frames_bins_and_position() -> None:
    m = Metrics()
    update = {"type": "run_update", "binIndex": 4, "watermark": 7, "lastBin": 4}
    warning = {"type": "warning_update", "op": "add"}
    m.observe_ingest("r1", 3, [update | {"binIndex": 3, "lastBin": 3}, warning, update])
    m.observe_ingest("r1", 2, [])
    text = m.render()[0].decode()
    assert 'flowtime_ingested_frames_total{run_id="r1"} 5.0' in text
    assert 'flowtime_ingested_bins_total{run_id="r1"} 2.0' in text
    assert 'flowtime_bins_behind{run_id="r1"} 3.0' in text
