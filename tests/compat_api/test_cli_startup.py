"""`flowtime --help` starts fast (issue 16): the parser imports a subcommand's module only when that
subcommand is given. The time itself is measured (docs/performance.md), not asserted."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from compat_api.cli.main import LAZY_COMMANDS, build_parser, given_command, main

HEAVY = ("httpx", "rich", "uvicorn", "pydantic", "numpy", "websockets", "compat_api.settings", "yaml")


def subcommands(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each subcommand's name and help."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {choice.dest: choice.help or "" for choice in action._choices_actions}


def test_the_lazy_table_lists_what_the_modules_register() -> None:
    full, lazy = subcommands(build_parser()), subcommands(build_parser(""))
    assert full == lazy
    listed = {name for commands in LAZY_COMMANDS.values() for name, _ in commands}
    assert listed <= set(full) and {"run", "validate", "serve"} | listed == set(full)


def test_help_and_run_import_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from compat_api.cli.main import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]", out


@pytest.mark.parametrize("argv", [["ingest", "--help"], ["serve", "--help"], ["stream", "runs", "--help"]])
def test_a_given_subcommand_is_built_in_full(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert given_command(argv) == argv[0] and given_command(["--version"]) == ""
    with pytest.raises(SystemExit):
        main(argv)
    assert f"usage: flowtime {' '.join(argv[:-1])}" in capsys.readouterr().out


def test_version_is_printed_on_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("flowtime ")
