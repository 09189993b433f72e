"""The CLI with its output piped, as in the README tour (issue 15):

- `flowtime stream runs ID --json | head -n 3` ends: the closed pipe is not a lost connection, the
  tail stops quietly (exit 0, nothing on stderr) instead of reconnecting and replaying forever;
- `flowtime demo 2>&1 | tee log`: Ctrl-C (or SIGTERM) stops the demo even after `tee`, killed by
  the same Ctrl-C, closed the pipe — the run is closed and completed, the process exits 0. The
  pipe's reader is this test: it closes its end, then signals (a write to a pipe without a reader
  fails at once with EPIPE, so the demo meets the closed pipe on its next line).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cli_support import ENV, FLOWTIME, Lines, Service, create_live_run, flowtime, popen

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(_free_port(), tmp_path / "data")
    svc.start()
    try:
        yield svc
    finally:
        svc.stop()


def _shell(script: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`bash -c script` in its own session; on a timeout the whole pipeline is killed, then it fails."""
    with subprocess.Popen(
        ["bash", "-c", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
        start_new_session=True,
    ) as proc:
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
            raise AssertionError(f"{script!r} still running after {timeout_s}s; stderr: {err[-2000:]}") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_stream_json_into_head_ends_quietly(service: Service) -> None:
    bundle = create_live_run(service, "r-head", bins=24)
    ingest = flowtime("ingest", "r-head", "--bundle", str(bundle), "--url", service.url)
    assert ingest.returncode == 0, ingest.stderr
    tail = " ".join(shlex.quote(p) for p in [*FLOWTIME, "stream", "runs", "r-head", "--json", "--url", service.url])
    # the run stays open: without the fix the tail reconnects and replays into the closed pipe forever
    r = _shell(f"set -o pipefail; {tail} | head -n 3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["type"] == "subscribed"
    assert r.stderr == "", r.stderr  # no "[stream] connection lost", no traceback, no "Exception ignored"


def test_stream_table_into_a_closed_pipe_ends_quietly(service: Service) -> None:
    bundle = create_live_run(service, "r-table", bins=24)
    assert flowtime("ingest", "r-table", "--bundle", str(bundle), "--url", service.url).returncode == 0
    tail = " ".join(shlex.quote(p) for p in [*FLOWTIME, "stream", "runs", "r-table", "--url", service.url])
    r = _shell(f"set -o pipefail; {tail} | head -c 1")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "reconnecting" not in r.stderr, r.stderr


def _demo_with_closed_pipe(data: Path, sig: signal.Signals, *, twice: bool = False) -> tuple[int, str]:
    """Start a demo, read until its first status line, close the pipe, signal; → (exit code, run id)."""
    with popen("demo", "--speed", "10", "--port", "0", "--data-dir", str(data)) as proc:
        out = Lines(proc.stdout)
        first = out.wait_for(lambda line: line.startswith("demo run "), timeout_s=60)
        run_id = first.split()[2].rstrip(":")
        out.wait_for(lambda line: bool(re.match(r"^\[\s*\d+\.\ds\] sent", line)), timeout_s=60)
        assert proc.stdout is not None
        proc.stdout.close()  # `tee` is gone: every later write of the demo fails with EPIPE
        proc.send_signal(sig)
        if twice:
            proc.send_signal(sig)
        code = proc.wait(timeout=60)
        err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err
    return code, run_id


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_demo_with_piped_output_stops_on_a_signal(tmp_path: Path, sig: signal.Signals) -> None:
    data = tmp_path / "demo"
    code, run_id = _demo_with_closed_pipe(data, sig)
    assert code == 0
    run_json = json.loads((data / "runs" / run_id / "run.json").read_text())
    assert run_json["status"] == "completed"  # the run was closed and its artifacts written


@pytest.mark.slow
def test_demo_with_piped_output_aborts_on_a_second_ctrl_c(tmp_path: Path) -> None:
    code, _ = _demo_with_closed_pipe(tmp_path / "demo", signal.SIGINT, twice=True)
    assert code in (0, 3)  # 3: aborted; 0: the close finished before the second signal was handled


def test_client_commands_say_where_they_looked(tmp_path: Path) -> None:
    data = tmp_path / "nothing-here"
    r = flowtime("compare", "A", "B", "--data-dir", str(data))
    assert r.returncode == 2
    assert "run 'A' not found" in r.stderr and str(data) in r.stderr and "--data-dir" in r.stderr, r.stderr


def test_export_of_a_live_run(service: Service) -> None:
    bundle = create_live_run(service, "r-export", bins=24)
    assert flowtime("ingest", "r-export", "--bundle", str(bundle), "--url", service.url).returncode == 0
    with httpx.Client(base_url=service.url, timeout=30) as http:
        made = http.post("/v1/runs/r-export/export")
        assert made.status_code == 201, made.text
        csv_text = http.get("/v1/runs/r-export/export/csv")
        assert csv_text.status_code == 200, csv_text.text
        assert csv_text.text.startswith("time_utc,bin_index,node,metric,series_id,value")
        assert http.get("/v1/runs/r-export").json()["status"] == "live"  # exporting does not close it
