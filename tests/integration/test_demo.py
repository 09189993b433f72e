"""`flowtime demo` as a user runs it: a subprocess from a fresh data folder (SPEC §9, issue 7)."""

from __future__ import annotations

import csv
import json
import re
import signal
from pathlib import Path

import pytest
from cli_support import Lines, flowtime, popen

from compat_api.templates.catalog import template_bundle

pytestmark = [pytest.mark.integration, pytest.mark.slow]
BINS = 288  # the microservices template's default grid, and its bundle


def _run_id(stdout: str) -> str:
    match = re.search(r"^demo run (demo-\S+):", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def _bundle_values(name: str) -> list[float]:
    with (template_bundle("microservices") / name).open() as fh:
        return [float(row["value"]) for row in csv.DictReader(fh)]


def test_demo_with_duration_exits_0_from_a_fresh_folder_and_again(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "demo"  # not there yet
    r = flowtime("demo", "--duration", "20", "--speed", "50", "--port", "0", "--data-dir", str(data), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    run_id = _run_id(r.stdout)
    assert re.search(rf"^dashboard: http://127\.0\.0\.1:\d+/\?run={run_id}$", r.stdout, re.MULTILINE)
    status_lines = [line for line in r.stdout.splitlines() if re.match(r"^\[\s*\d+\.\ds\] sent \d+/288 bins", line)]
    assert len(status_lines) >= 3  # about one per second: 288 bins at 50/s take ~6 s
    summary = next(line for line in r.stdout.splitlines() if line.startswith("summary:"))
    assert f"run {run_id} completed: {BINS} bins" in summary
    assert f"replay finished: all {BINS} bins of the bundle sent" in r.stdout  # a finished replay says so
    # the summary lists what it counts (up to 10, then how many more)
    counted = int(re.search(r"(\d+) warnings in run\.json", summary).group(1))  # type: ignore[union-attr]
    listed = [line for line in r.stdout.splitlines() if line.startswith("  warning ")]
    assert len(listed) == min(counted, 10)
    assert (f"… and {counted - 10} more in" in r.stdout) == (counted > 10)
    run_dir = data / "runs" / run_id
    assert f"artifacts: {run_dir}" in r.stdout
    run_json = json.loads((run_dir / "run.json").read_text())
    assert run_json["status"] == "completed" and run_json["grid"]["bins"] == BINS
    assert run_json["live"]["lastBin"] == BINS - 1
    match = re.search(r"(\d+) events \(seq (\d+),", summary)
    assert match, summary
    assert int(match.group(1)) == int(match.group(2))  # the tail saw every event up to the final seq
    assert run_json["live"]["seq"] <= int(match.group(2))  # (artifacts are written before "completed")
    # the live run's telemetry-fed series are the bundle's values, bin for bin
    index = json.loads((run_dir / "series" / "index.json").read_text())
    entry = next(s for s in index["series"] if s["id"].startswith("gateway_arrivals@"))
    with (run_dir / entry["path"]).open() as fh:
        values = [float(row["value"]) for row in csv.DictReader(fh)]
    assert values == _bundle_values("Gateway_arrivals.csv")
    # a second demo in the same folder works too, with a new run id
    again = flowtime("demo", "--duration", "20", "--speed", "100", "--port", "0", "--data-dir", str(data), timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _run_id(again.stdout) != run_id
    assert (data / "runs" / _run_id(again.stdout) / "manifest.json").is_file()


def test_demo_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    with popen("demo", "--speed", "10", "--port", "0", "--data-dir", str(data)) as proc:
        out = Lines(proc.stdout)
        out.wait_for(lambda line: bool(re.match(r"^\[\s*\d+\.\ds\] sent", line)), timeout_s=60)
        proc.send_signal(signal.SIGINT)
        lines = out.rest(timeout_s=60)
        assert proc.wait(timeout=30) == 0
        err = proc.stderr.read() if proc.stderr else ""
    text = "\n".join(lines)
    assert "stopping: closing the run" in text and "Traceback" not in err
    run_id = _run_id(text)
    summary = next(line for line in lines if line.startswith("summary:"))
    assert f"run {run_id} completed" in summary
    sent = int(re.search(r"(\d+) replayed", summary).group(1))  # type: ignore[union-attr]
    assert 0 < sent < BINS  # stopped early; the close evaluated the rest of the grid
    assert (data / "runs" / run_id / "manifest.json").is_file()
