"""README's "Bring your FlowTime model" runs as written (from a copy of the repository's example file,
so the run folder lands in a temporary directory), and gives the hand-computed series.

compat_api/examples/flowtime_template.yaml with bins=4, demand 40 90 120 50, capacity 80:
served = MIN(demand, 80) = 40 80 80 50; waiting = demand − served = 0 10 40 0; the payment queue
pays MIN(Q[t−1] + waiting, 30) = 0 10 30 10, so Q = 0 0 10 0."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest

from compat_api.cli.main import main

ROOT = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Bring your FlowTime model", 1)[1].split("\n## ", 1)[0]
    (block,) = re.findall(r"```bash\n(.*?)```", section, flags=re.S)
    return [line for line in block.splitlines() if line.strip()]


def test_the_readme_snippet_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands = readme_commands()
    assert commands and all(line.startswith("flowtime ") for line in commands)
    example = "compat_api/examples/flowtime_template.yaml"
    (tmp_path / example).parent.mkdir(parents=True)
    shutil.copy(ROOT / example, tmp_path / example)
    monkeypatch.chdir(tmp_path)
    for line in commands:
        assert main(shlex.split(line)[1:]) == 0, line
    series = tmp_path / "runs" / "checkout" / "series"

    def values(name: str) -> list[str]:
        return [
            row.split(",")[1] for row in (series / f"{name}@{name.upper()}@DEFAULT.csv").read_text().splitlines()[1:]
        ]

    assert values("served") == ["40", "80", "80", "50"]
    assert values("waiting") == ["0", "10", "40", "0"]
    assert values("paid") == ["0", "10", "30", "10"]
    assert values("payment_queue_queue") == ["0", "0", "10", "0"]
    assert not (series / "payment_queue_queue_prev@PAYMENT_QUEUE_QUEUE_PREV@DEFAULT.csv").exists()  # excluded
