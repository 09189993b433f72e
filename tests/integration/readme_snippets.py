"""README's shell snippets as data: the bash blocks of a section, split into commands with the
answers the README promises for them.

A command is one or more lines (a quoted string may span lines; a trailing backslash continues);
a comment `# → {...}` — at the end of the command or alone on the next line — is a JSON object
the command's output must contain (every key with that value; nested objects likewise).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
EXPECT = re.compile(r"#\s*→\s*(?:\d{3}\s+)?(\{.*\})\s*$")


@dataclass
class Command:
    text: str
    expect: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def words(self) -> list[str]:
        return shlex.split(self.text, comments=True)


def section(markdown: str, heading: str) -> str:
    """The text of a `## heading` section, up to the next `## `."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", markdown, re.MULTILINE | re.DOTALL)
    assert match, f"README has no section '## {heading}'"
    return match.group(1)


def bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text.replace("$'", "'"), comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


def commands(block: str) -> list[Command]:
    out: list[Command] = []
    pending = ""
    for line in block.splitlines():
        if not pending and line.lstrip().startswith("#"):
            match = EXPECT.search(line)
            if match and out:
                out[-1].expect = json.loads(match.group(1))
            continue
        pending = f"{pending}\n{line}" if pending else line
        if _complete(pending):
            match = EXPECT.search(pending.splitlines()[-1])
            out.append(Command(pending, json.loads(match.group(1)) if match else None))
            pending = ""
    assert not pending, f"an unfinished command in README: {pending!r}"
    return out


def contains(actual: Any, expected: Any) -> bool:
    """`expected`'s keys (recursively) have the same values in `actual`."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in expected.items())
    return bool(actual == expected)


def readme() -> str:
    return (ROOT / "README.md").read_text(encoding="utf-8")


__all__ = ["ROOT", "Command", "bash_blocks", "commands", "contains", "readme", "section"]
