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
import select
import shlex
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from cli_support import ENV, FLOWTIME, Service, create_live_run, flowtime

pytestmark = pytest.mark.integration
LIVE_RUN = Path(__file__).resolve().parents[2] / "compat_api" / "examples" / "live_run.json"


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


def _read_until(fd: int, pattern: str, timeout_s: float = 60.0) -> str:
    """Read the pipe `fd` (no thread, select with a deadline) until a line matches `pattern`."""
    deadline, buf = time.monotonic() + timeout_s, b""
    while True:
        for line in buf.decode(errors="replace").splitlines():
            if re.search(pattern, line):
                return buf.decode(errors="replace")
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no line matching {pattern!r} in {timeout_s}s; got {buf[-2000:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"output ended before {pattern!r}; got {buf[-2000:]!r}")
            buf += chunk


def _demo_with_closed_pipe(data: Path, sig: signal.Signals, *, twice: bool = False) -> tuple[int, str]:
    """Start a demo, read until its first status line, close the pipe, signal; → (exit code, run id)."""
    read_fd, write_fd = os.pipe()
    cmd = [*FLOWTIME, "demo", "--speed", "10", "--port", "0", "--data-dir", str(data)]
    with subprocess.Popen(cmd, stdout=write_fd, stderr=subprocess.PIPE, text=True, env=ENV) as proc:
        os.close(write_fd)  # the demo holds the only writer, this test the only reader (`tee`)
        try:
            text = _read_until(read_fd, r"^\[\s*\d+\.\ds\] sent")
        finally:
            os.close(read_fd)  # `tee` is gone: every later write of the demo fails with EPIPE
        proc.send_signal(sig)
        if twice:
            proc.send_signal(sig)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"the demo ignored {sig.name} with its stdout closed") from None
        err = proc.stderr.read() if proc.stderr else ""
    assert "Traceback" not in err, err
    match = re.search(r"^demo run (demo-\S+):", text, re.MULTILINE)
    assert match, text
    return code, match.group(1)


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


def test_ingested_frames_count_frames_not_values(service: Service) -> None:
    body = b'{"mode": "live", "options": {"runId": "r1"}, "model": ' + _live_model() + b"}"
    frames = (
        b'{"bin": 0, "node": "OrderService", "arrivals": 35, "served": 33}\n'
        b'{"bin": 1, "node": "OrderService", "arrivals": 40, "served": 38}'
    )
    with httpx.Client(base_url=service.url, timeout=30) as http:
        assert http.post("/v1/runs", content=body, headers={"content-type": "application/json"}).status_code == 202
        r = http.post("/v1/runs/r1/bins", content=frames, headers={"content-type": "application/x-ndjson"})
        assert r.status_code == 202 and r.json()["accepted"] == 4, r.text  # the answer counts values
        text = http.get("/metrics").text
    assert 'flowtime_ingested_frames_total{run_id="r1"} 2.0' in text, [x for x in text.splitlines() if "frames" in x]


def _live_model() -> bytes:
    return json.dumps(json.loads(LIVE_RUN.read_text())["model"]).encode()


def test_docs_page_and_its_assets_come_from_the_service(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=30) as http:
        page = http.get("/docs")
        assert page.status_code == 200 and "swagger-ui" in page.text
        urls = re.findall(r"""(?:src|href)=["']([^"']+)""", page.text)
        assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
        for u in urls:
            asset = http.get(u)
            assert asset.status_code == 200 and len(asset.content) > 100, u
        redoc = http.get("/redoc")
        assert redoc.status_code == 200 and "fonts.googleapis" not in redoc.text and "cdn." not in redoc.text
        assert http.get("/docs/assets/secret.txt").status_code == 404


@pytest.mark.slow
def test_demo_stopped_early_has_no_zero_filled_bins(tmp_path: Path) -> None:
    data = tmp_path / "demo"
    r = flowtime("demo", "--duration", "3", "--speed", "10", "--port", "0", "--data-dir", str(data), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    summary = next(line for line in r.stdout.splitlines() if line.startswith("summary:"))
    sent = int(re.search(r"\((\d+) replayed\)", summary).group(1))  # type: ignore[union-attr]
    run_id = re.search(r"^demo run (demo-\S+):", r.stdout, re.MULTILINE).group(1)  # type: ignore[union-attr]
    run_json = json.loads((data / "runs" / run_id / "run.json").read_text())
    assert 0 < sent < 288 and run_json["grid"]["bins"] == sent  # the run ends where its telemetry ends
    assert not [w for w in run_json.get("warnings") or [] if w["code"] == "data_gap"], run_json["warnings"]
    assert "replay finished" not in r.stdout  # stopped by --duration before the bundle's end
