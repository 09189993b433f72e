"""README's snippets run as written, from a fresh install (issue 15 "Must show").

The package is copied to a new folder (what a clone holds of it) and installed there with the
README's own "Set up" command (a new venv, `pip install -e .`, the `flowtime` entry point). Then,
with that venv's `bin` first on PATH and the repository copy as the working folder:

- "A five-minute tour": `flowtime demo --speed 8` is started (in the background, as a first
  terminal), `flowtime stream runs` tails it until Ctrl-C, `flowtime stream runs --json | head` ends
  by itself, `flowtime run ...` writes its run, the overlay/compare `curl`s answer what their
  comments say and `flowtime compare` finds the runs in the demo's data folder;
- "Live runs over HTTP": every `curl` against the demo's service answers what its comment says;
- the demo stops on Ctrl-C with exit 0.

The snippets talk to `localhost:8080`; the test's service listens on a free port instead:
`FLOWTIME_PORT` (the demo), `FLOWTIME_URL` (client commands) and `curl --connect-to` (a shell
function in front of each command) point them there, the commands themselves are unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from readme_snippets import ROOT, Command, bash_blocks, commands, contains, readme, section

pytestmark = [pytest.mark.integration, pytest.mark.slow]
PACKAGES = ("engine_live", "ingestion", "stream_hub", "snapshot_writer", "compat_api")
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the package installed with the README's "Set up" command."""
    root = tmp_path_factory.mktemp("clone")
    for name in PACKAGES:
        shutil.copytree(ROOT / name, root / name, ignore=IGNORE)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, root / name)
    setup = commands(bash_blocks(section(readme(), "Set up"))[0])[0].text
    install, sep, _ = setup.partition(" && .venv/bin/flowtime demo")
    assert sep, f"the Set up command changed: {setup!r}"
    # the interpreter this venv came from stands for `python3.11` (PATH may name another one)
    install = install.replace("python3.11", shlex.quote(getattr(sys, "_base_executable", sys.executable)), 1)
    r = subprocess.run(["bash", "-c", install], cwd=root, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, f"{install}\n{r.stdout}\n{r.stderr}"
    assert (root / ".venv" / "bin" / "flowtime").is_file()
    return root


class Shell:
    """Runs README commands in the fresh install against the service on `port`."""

    def __init__(self, root: Path, port: int, data: Path, logs: Path) -> None:
        self.root, self.logs = root, logs
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWTIME_", "VIRTUAL_ENV", "PYTHON"))}
        self.env = {
            **env,
            "PATH": f"{root / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "VIRTUAL_ENV": str(root / ".venv"),
            "PYTHONUNBUFFERED": "1",
            "FLOWTIME_PORT": str(port),
            "FLOWTIME_DATA_DIR": str(data),
            "FLOWTIME_URL": f"http://127.0.0.1:{port}",
        }
        self.prelude = f'curl() {{ command curl --connect-to localhost:8080:127.0.0.1:{port} "$@"; }}\n'
        self.count = 0

    def run(self, cmd: Command, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", self.prelude + cmd.text],
            cwd=self.root,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )

    def start(self, cmd: Command) -> tuple[subprocess.Popen[bytes], Path, Path]:
        """A long-running command in its own process group (a terminal of its own)."""
        self.count += 1
        out, err = self.logs / f"cmd-{self.count}.out", self.logs / f"cmd-{self.count}.err"
        with out.open("wb") as o, err.open("wb") as e:
            proc = subprocess.Popen(
                ["bash", "-c", self.prelude + cmd.text],
                cwd=self.root,
                env=self.env,
                stdout=o,
                stderr=e,
                start_new_session=True,
            )
        return proc, out, err


def ctrl_c(proc: subprocess.Popen[bytes], timeout_s: float = 60.0) -> int:
    """SIGINT to the command's process group, as Ctrl-C in its terminal; its exit code."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        return proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise AssertionError("Ctrl-C did not stop the command") from None


def wait_for_text(path: Path, pattern: str, proc: subprocess.Popen[bytes], timeout_s: float = 90.0) -> str:
    """Poll the file until `pattern` (a regular expression) is found in it."""
    deadline = time.monotonic() + timeout_s
    while True:
        body = path.read_text(errors="replace") if path.exists() else ""
        if re.search(pattern, body):
            return body
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} not in {path.name} (exit {proc.poll()}):\n{body[-3000:]}")
        time.sleep(0.1)


@pytest.fixture
def background() -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def check_answer(cmd: Command, r: subprocess.CompletedProcess[str]) -> Any:
    assert r.returncode == 0, f"{cmd.text}\n{r.stdout}\n{r.stderr}"
    if cmd.expect is None:
        return None
    try:
        body = json.loads(r.stdout)
    except ValueError:
        raise AssertionError(f"{cmd.text}: not JSON: {r.stdout[:2000]}") from None
    assert contains(body, cmd.expect), f"{cmd.text}\nREADME promises {cmd.expect}\ngot {r.stdout[:3000]}"
    return body


def test_readme_snippets_run_as_written(fresh: Path, tmp_path: Path, background: list[subprocess.Popen[bytes]]) -> None:
    text = readme()
    tour_blocks = bash_blocks(section(text, "A five-minute tour"))
    tour, overlay = commands(tour_blocks[0]), commands(tour_blocks[1])
    (live_block,) = bash_blocks(section(text, "Live runs over HTTP"))
    live = commands(live_block)
    port = _free_port()
    shell = Shell(fresh, port, tmp_path / "data", tmp_path)

    demo_out: Path | None = None
    demo: subprocess.Popen[bytes] | None = None
    for cmd in tour:
        words = cmd.words
        if words[:1] == ["source"]:
            continue  # PATH holds the venv already
        if words[:2] == ["flowtime", "demo"]:
            demo, demo_out, _ = shell.start(cmd)
            background.append(demo)
            wait_for_text(demo_out, "dashboard: ", demo)
        elif words == ["flowtime", "stream", "runs"]:
            tail, out, err = shell.start(cmd)
            background.append(tail)
            assert demo is not None and demo_out is not None
            wait_for_text(err, "the newest live run", tail)
            wait_for_text(demo_out, r"sent (?:[2-9]\d|\d{3})/", demo)  # 20 bins in (the demo prints its progress)
            assert ctrl_c(tail) == 0
            table = out.read_text()
            assert "demo-" in table and "OrderQueue" in table, table
        elif "|" in words and "head" in words:
            r = shell.run(cmd, timeout_s=60)
            assert r.returncode == 0, r.stderr
            assert r.stderr.startswith("[stream] tailing demo-") and r.stderr.count("\n") == 1, r.stderr
            events = [json.loads(line) for line in r.stdout.splitlines()]
            assert len(events) == 10 and events[0]["type"] == "subscribed", r.stdout
        else:
            r = shell.run(cmd)
            check_answer(cmd, r)
            if words[:2] == ["flowtime", "run"]:
                out_dir = words[words.index("--out") + 1]
                assert (fresh / out_dir / "run.json").is_file(), r.stdout
    assert demo is not None and demo_out is not None

    for cmd in overlay:
        r = shell.run(cmd)
        check_answer(cmd, r)
        if cmd.words[:2] == ["flowtime", "compare"]:
            assert "diff written to" in r.stdout and "tour-whatif" in r.stdout, r.stdout

    answers = [check_answer(cmd, shell.run(cmd)) for cmd in live]
    assert len(answers) == 6
    state = answers[2]
    node = state["nodes"][0]
    assert node["id"] == "OrderService" and node["metrics"]["queueDepth"] == 4 and node["derived"]["color"] == "red"

    assert ctrl_c(demo) == 0
    log = demo_out.read_text()
    assert "stopping: closing the run" in log and "summary: run demo-" in log, log[-3000:]
