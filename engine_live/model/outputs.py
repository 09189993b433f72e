"""`outputs`: which series a run writes, and under which file names (SPEC §1, §13).

An entry is `{series, as?, exclude?}`. `series` is a series id or a pattern: `*` (every series),
`<prefix>*` (every series whose id starts with the prefix) or `<node>/*` (the series bound to topology
node `<node>` and its hidden `<node>.<field>` series). `exclude` lists ids or patterns taken out of a
pattern's matches; a pattern names many files, so it has no `as`. Upstream forms: `filename` is `as`;
the legacy `{id, source, filename}` is `{series: source, as: filename}` (info `legacy_field`).

Patterns expand in the order the model defines its series; a series an earlier entry already writes is
not written again by a pattern.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from engine_live.model.checking import Problems, file_name_problem

OUTPUT_KEYS = {"series", "as", "exclude", "filename", "source", "id"}
PATTERN_HELP = "a pattern is '*', '<prefix>*' or '<node>/*'"
MAX_PATTERNS = 64
"""Patterns (in `series` and `exclude`) a model may use: each is matched against every series."""


@dataclass(frozen=True)
class OutputSpec:
    """One checked `outputs` entry."""

    series: str
    name: str | None = None
    exclude: tuple[str, ...] = ()

    @property
    def is_pattern(self) -> bool:
        """Whether `series` is a pattern rather than one series id."""
        return "*" in self.series


def _pattern_ok(text: str) -> bool:
    return "*" not in text or (text.endswith("*") and text.count("*") == 1)


def _name(problems: Problems, where: str, raw: dict[str, Any]) -> str | None:
    name, filename = raw.get("as"), raw.get("filename")
    if name is not None and filename is not None and name != filename:
        problems.error(where, "give as: or filename:, not both (filename: is upstream's spelling of as:)")
    name = name if name is not None else filename
    if name is None:
        return None
    if not isinstance(name, str):
        problems.error(where, f"as: must be a file name, got {name!r}")
        return None
    if (problem := file_name_problem(name)) is not None:
        problems.error(where, f"as: {problem}")
    return name


def _series(problems: Problems, where: str, raw: dict[str, Any]) -> str | None:
    series = raw.get("series")
    if "source" in raw:
        if series is not None:
            problems.error(where, "give series: or source:, not both (source: is the legacy spelling)")
        series = raw["source"]
        problems.note("legacy_field", where, "{id, source, filename} is read as {series: source, as: filename}")
    if not isinstance(series, str) or not series:
        problems.error(where, "series: required (a series id or a pattern)")
        return None
    if not _pattern_ok(series):
        problems.error(where, f"series: {PATTERN_HELP}, got {series!r}")
    return series


def _check_entry(problems: Problems, where: str, raw: Any) -> OutputSpec | None:
    if not isinstance(raw, dict):
        problems.error(where, "must be a mapping {series, as}")
        return None
    problems.check_keys(where, raw, OUTPUT_KEYS)
    series = _series(problems, where, raw)
    name = _name(problems, where, raw)
    exclude = raw.get("exclude") or []
    if not isinstance(exclude, list) or not all(isinstance(x, str) and _pattern_ok(x) for x in exclude):
        problems.error(where, f"exclude: must be a list of series ids or patterns ({PATTERN_HELP})")
        exclude = []
    if series is None:
        return None
    if "*" in series and name is not None:
        problems.error(where, "as: a pattern writes one file per series, so it takes no file name")
    return OutputSpec(series, name, tuple(exclude))


def check_outputs(problems: Problems, raw: Any) -> tuple[OutputSpec, ...] | None:
    """The checked `outputs` list (None when the model has none: every series is written)."""
    if raw is None:
        return None
    if not isinstance(raw, list):
        problems.error("model", "outputs: must be a list of {series, as} (upstream's outputs mapping is not a model's)")
        return None
    specs = [_check_entry(problems, f"outputs[{index}]", entry) for index, entry in enumerate(raw)]
    checked = tuple(spec for spec in specs if spec is not None)
    patterns = sum(spec.is_pattern + sum("*" in x for x in spec.exclude) for spec in checked)
    if patterns > MAX_PATTERNS:
        problems.error("outputs", f"at most {MAX_PATTERNS} patterns, got {patterns}")
    return checked


def matches(pattern: str, series_id: str, members: Mapping[str, frozenset[str]]) -> bool:
    """Whether `series_id` is `pattern` or matches it (`members`: topology node → its bound series)."""
    if pattern == "*":
        return True
    if pattern.endswith("/*"):
        node = pattern[:-2]
        return series_id in members.get(node, frozenset()) or series_id.startswith(node + ".")
    if pattern.endswith("*"):
        return series_id.startswith(pattern[:-1])
    return series_id == pattern


def resolve_outputs(
    specs: Iterable[OutputSpec],
    series_ids: Iterable[str],
    members: Mapping[str, frozenset[str]],
    error: Callable[[str, str], None],
) -> tuple[tuple[str, str | None], ...]:
    """(series id, file name) pairs to write; `error(where, message)` for an unknown series id."""
    ordered = list(series_ids)
    known = set(ordered)
    chosen: list[tuple[str, str | None]] = []
    written: set[str] = set()
    for spec in specs:
        if not spec.is_pattern:
            if spec.series not in known:
                error("outputs", f"unknown series {spec.series!r}")
                continue
            chosen.append((spec.series, spec.name))
            written.add(spec.series)
            continue
        excluded = {x for x in spec.exclude if "*" not in x}
        exclude_patterns = [x for x in spec.exclude if "*" in x]
        for sid in ordered:
            if sid in written or sid in excluded or not matches(spec.series, sid, members):
                continue
            if any(matches(x, sid, members) for x in exclude_patterns):
                continue
            chosen.append((sid, None))
            written.add(sid)
    return tuple(chosen)


__all__ = ["OutputSpec", "check_outputs", "matches", "resolve_outputs"]
