"""How many generated cases each fuzz target ran, printed in pytest's terminal summary (issue 12)."""

from __future__ import annotations

from collections import Counter

CASES: Counter[str] = Counter()


def count(target: str) -> None:
    """One more case of `target`."""
    CASES[target] += 1
