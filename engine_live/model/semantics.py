"""A topology node's `semantics` as upstream writes them (SPEC §13), checked into series fields and labels.

- `null` for any key means the key is absent.
- `queue` is `queueDepth` and `external_demand` is `externalDemand` (naming both spellings is an error).
- Series fields (`arrivals`, `served`, …, `exhaustedFailures`, `retryBudgetRemaining`) name a series,
  `file:<path>` / `file://<path>` or `telemetry`.
- Labels are shown, never resolved as series: `aliases` (metric → display name; keys case-insensitive,
  underscores optional, as upstream's metric-alias guide says) and `exhaustedPolicy`, `backoffStrategy`
  (text) and `maxAttempts` (a number). Labels are at most `MAX_LABEL` characters, aliases at most
  `MAX_ALIASES` entries: they travel in every state answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from engine_live.model.checking import (
    LABEL_KEYS,
    SEMANTIC_ALIASES,
    SEMANTIC_KEYS,
    SERIES_FIELDS,
    Problems,
    check_number,
)
from engine_live.model.dialect import canonical_source

MAX_LABEL = 200
MAX_ALIASES = 64
_ALIAS_KEYS = {name.lower(): name for name in (*SERIES_FIELDS, "parallelism")}
_ALIAS_KEYS |= {"queue": "queueDepth", "queuedepth": "queueDepth"}


@dataclass(frozen=True)
class Semantics:
    """A topology node's semantics: the canonical mapping the builder resolves, and its labels."""

    fields: dict[str, Any]
    aliases: dict[str, str] = field(default_factory=dict)
    labels: dict[str, Any] = field(default_factory=dict)


def canonical_alias_key(key: str) -> str:
    """`queue_depth`, `QueueDepth`, `queue` → `queueDepth`; an unknown key as given."""
    return _ALIAS_KEYS.get(key.replace("_", "").lower(), key)


def _text(problems: Problems, where: str, value: Any) -> str | None:
    if not isinstance(value, str):
        problems.error(where, f"must be text, got {value!r}")
        return None
    if len(value) > MAX_LABEL:
        problems.error(where, f"at most {MAX_LABEL} characters, got {len(value)}")
        return None
    return value


def _aliases(problems: Problems, where: str, raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        problems.error(where, "semantics.aliases: must be a mapping {metric: display name}")
        return {}
    if len(raw) > MAX_ALIASES:
        problems.error(where, f"semantics.aliases: at most {MAX_ALIASES} entries, got {len(raw)}")
        return {}
    out: dict[str, str] = {}
    for key, value in raw.items():
        text = _text(problems, f"{where}: semantics.aliases.{key}", value)
        if text is not None:
            out[canonical_alias_key(str(key))] = text
    return out


def _labels(problems: Problems, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    labels: dict[str, Any] = {}
    for key in LABEL_KEYS:
        if key not in raw:
            continue
        value = raw[key]
        if key == "maxAttempts" and not isinstance(value, str):
            number = check_number(problems, f"{where}: semantics.maxAttempts", value)
            if number is not None and not math.isfinite(number):
                problems.error(where, f"semantics.maxAttempts: must be finite, got {value!r}")
            elif number is not None:
                labels[key] = int(number) if number.is_integer() else number
        elif (text := _text(problems, f"{where}: semantics.{key}", value)) is not None:
            labels[key] = text
    return labels


def _renamed(problems: Problems, where: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Nulls dropped, upstream spellings renamed, file:// sources written file:."""
    out: dict[str, Any] = {}
    written_as: dict[str, str] = {}
    for key, value in raw.items():
        if value is None:
            continue
        name = SEMANTIC_ALIASES.get(key, key)
        if name in out:
            problems.error(where, f"semantics: {name} is given twice (as {written_as[name]} and {key}): give it once")
        written_as[name] = key
        out[name] = canonical_source(value) if name in SERIES_FIELDS else value
    return out


def check_semantics(problems: Problems, where: str, raw: Any) -> Semantics:
    """The checked semantics of one topology node (errors recorded, never raised)."""
    if raw is None:
        return Semantics({})
    if not isinstance(raw, dict):
        problems.error(where, "semantics: must be a mapping")
        return Semantics({})
    problems.check_keys(f"{where}: semantics", raw, SEMANTIC_KEYS)
    semantics = _renamed(problems, where, raw)
    for key in SERIES_FIELDS:
        if key in semantics and not isinstance(semantics[key], str):
            problems.error(where, f"semantics.{key}: must name a series, 'file:<path>' or 'telemetry'")
    if "slaMin" in semantics:
        check_number(problems, f"{where}: semantics.slaMin", semantics["slaMin"])
    parallelism = semantics.get("parallelism")
    if parallelism is not None and not isinstance(parallelism, str):
        check_number(problems, f"{where}: semantics.parallelism", parallelism)
    kernel = semantics.get("retryKernel")
    if kernel is not None and (
        not isinstance(kernel, list)
        or not all(check_number(problems, f"{where}: semantics.retryKernel", k) is not None for k in kernel)
    ):
        problems.error(where, "semantics.retryKernel: must be a list of numbers")
    aliases = _aliases(problems, where, semantics.pop("aliases")) if "aliases" in semantics else {}
    labels = _labels(problems, where, semantics)
    for key in LABEL_KEYS:
        semantics.pop(key, None)
    return Semantics(semantics, aliases, labels)


__all__ = ["MAX_ALIASES", "MAX_LABEL", "Semantics", "canonical_alias_key", "check_semantics"]
