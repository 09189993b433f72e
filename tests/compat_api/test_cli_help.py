"""`flowtime --version`, `flowtime serve --help` (every flag described, with its default and env
variable), the one default data folder, and the stdout helper that survives a closed pipe."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from compat_api.cli.help import SERVE_FLAGS, version
from compat_api.cli.main import build_parser, main
from compat_api.settings import Settings


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"flowtime {version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", version())


def test_serve_help_describes_every_flag_with_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    for flag, dest, _, _ in SERVE_FLAGS:
        default = Settings.model_fields[dest].default
        shown = "none" if default is None else str(default)
        assert flag in text
        assert f"env FLOWTIME_{dest.upper()}" in text, flag
        assert re.search(rf"default (?:\./)?{re.escape(shown.removeprefix('./'))}\b", text), (flag, shown)
    assert "--print-config" in text and "flags win over the environment" in text


def test_serve_flags_stay_unset_when_not_given() -> None:
    args = build_parser().parse_args(["serve"])
    assert all(getattr(args, dest) is None for _, dest, _, _ in SERVE_FLAGS)  # env and config still apply
    args = build_parser().parse_args(["serve", "--port", "9000", "--data-dir", "/tmp/x"])
    assert (args.port, args.data_dir) == (9000, "/tmp/x")


def test_one_default_data_folder_for_serve_demo_compare_and_artifacts() -> None:
    parser = build_parser()
    demo = parser.parse_args(["demo"])
    compare = parser.parse_args(["compare", "A", "B"])
    artifacts = parser.parse_args(["artifacts", "list"])
    serve = parser.parse_args(["serve"])
    # none sets its own: each falls back to the settings (FLOWTIME_DATA_DIR, else ./data)
    assert demo.data_dir is compare.data_dir is artifacts.data_dir is serve.data_dir is None
    assert demo.port is None


def test_say_survives_a_closed_stdout() -> None:
    code = (
        "import os, sys\n"
        "from compat_api.cli.output import say, stdout_closed\n"
        "r, w = os.pipe(); os.dup2(w, 1); os.close(r)\n"
        "assert say('one') is False and stdout_closed()\n"
        "assert say('two') is False\n"
        "sys.stderr.write('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=os.environ)
    assert r.returncode == 0 and r.stderr == "ok", r.stderr
