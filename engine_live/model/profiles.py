"""Time-of-day profiles (SPEC §13, upstream `docs/templates/profiles.md`): per-bin weights that shape a
const or pmf node's values.

`profile: {kind: builtin, name}` names one of upstream's 24-hour curves; `profile: {kind: inline,
weights: [...]}` gives `grid.bins` weights. As upstream computes them: a builtin's 24 hourly weights
are repeated over 12 five-minute bins each (288 weights) and normalized to average 1, then resampled
to `grid.bins` by linear interpolation (weight i reads position `i / bins · 287`) and normalized again;
inline weights (finite, ≥ 0) are normalized once. Normalizing divides by the average, which must be
positive; sums run in order, as upstream's loops do. A pmf's values become `μ · w[t]` (μ its expected
value), a const's `values[t] · w[t]`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

HOURLY: dict[str, tuple[float, ...]] = {
    "weekday-office": (
        *(0.18, 0.16, 0.15, 0.15, 0.2, 0.3, 0.45, 0.7, 0.95, 1.15, 1.25, 1.3),
        *(1.25, 1.15, 1.05, 1.0, 0.95, 0.85, 0.65, 0.5, 0.38, 0.3, 0.25, 0.2),
    ),
    "three-shift": (
        *(0.9, 0.9, 0.9, 0.92, 0.95, 0.98, 1.0, 1.03, 1.06, 1.1, 1.12, 1.15),
        *(1.12, 1.08, 1.05, 1.02, 1.0, 0.98, 0.96, 0.94, 0.92, 0.9, 0.9, 0.9),
    ),
    "hub-rush-hour": (
        *(0.2, 0.18, 0.17, 0.17, 0.2, 0.35, 0.7, 1.2, 1.4, 1.25, 1.0, 0.85),
        *(0.8, 0.85, 0.95, 1.1, 1.35, 1.5, 1.35, 1.0, 0.65, 0.4, 0.3, 0.22),
    ),
}
"""Upstream's builtin library: 24 hourly weights each (its `TimeOfDayProfileLibrary`)."""
BINS_PER_HOUR = 12  # the library's 5-minute resolution
PROFILE_KEYS = {"kind", "name", "weights"}


def normalize(weights: Sequence[float]) -> list[float]:
    """Weights scaled to average 1 (ValueError when the average is not positive)."""
    if not weights:
        raise ValueError("a profile needs at least one weight")
    total = 0.0
    for weight in weights:
        total += weight
    average = total / len(weights)
    if not average > 0:
        raise ValueError("profile weights must have a positive average")
    scale = 1.0 / average
    return [weight * scale for weight in weights]


def resample(source: Sequence[float], target: int) -> list[float]:
    """`source` stretched to `target` points by linear interpolation (a copy when lengths agree).
    Vectorized; every element takes the same IEEE operations as upstream's loop, so the same bits."""
    if len(source) == target:
        return list(source)
    last = len(source) - 1
    values = np.asarray(source, dtype=np.float64)
    position = np.arange(target, dtype=np.float64) / target * last
    lower = np.floor(position).astype(np.intp)
    upper = np.minimum(lower + 1, last)
    out = values[lower] + (values[upper] - values[lower]) * (position - lower)
    return [float(v) for v in out]


@lru_cache(maxsize=64)
def _builtin(name: str, bins: int) -> np.ndarray:
    hourly = HOURLY[name]
    expanded = [weight for weight in hourly for _ in range(BINS_PER_HOUR)]
    weights = np.asarray(normalize(resample(normalize(expanded), bins)), dtype=np.float64)
    weights.flags.writeable = False  # shared by every node (and model) using this profile and grid
    return weights


def builtin_array(name: str, bins: int) -> np.ndarray:
    """The weights of builtin profile `name` over `bins` bins, read-only (names case-insensitive;
    computed once per name and grid, however many nodes use them)."""
    if name.lower() not in HOURLY:
        raise ValueError(f"unknown builtin profile {name!r} (one of {', '.join(HOURLY)})")
    return _builtin(name.lower(), bins)


def builtin_weights(name: str, bins: int) -> list[float]:
    """`builtin_array` as a list."""
    return [float(w) for w in builtin_array(name, bins)]


def inline_weights(weights: Any, bins: int) -> list[float]:
    """Inline weights checked (a list of `bins` finite numbers ≥ 0) and normalized."""
    if not isinstance(weights, list) or not weights:
        raise ValueError("inline profiles need weights: a non-empty list of numbers")
    if len(weights) != bins:
        raise ValueError(f"inline weights: expected exactly {bins} numbers (grid.bins), got {len(weights)}")
    if not all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) and w >= 0 for w in weights):
        raise ValueError("inline weights must be finite numbers >= 0")
    return normalize([float(w) for w in weights])


def profile_weights(profile: Any, bins: int | None) -> np.ndarray:
    """The per-bin weights of a node's `profile` mapping (ValueError naming the problem)."""
    if not isinstance(profile, dict):
        raise ValueError("must be a mapping {kind: builtin, name} or {kind: inline, weights}")
    unknown = sorted(set(profile) - PROFILE_KEYS)
    if unknown:
        raise ValueError(f"unknown key '{unknown[0]}'")
    if bins is None:
        raise ValueError("a profile needs grid.bins")
    kind = profile.get("kind") or "builtin"
    if not isinstance(kind, str) or kind.lower() not in ("builtin", "inline"):
        raise ValueError(f"kind: must be builtin or inline, got {kind!r}")
    if kind.lower() == "inline":
        return np.asarray(inline_weights(profile.get("weights"), bins), dtype=np.float64)
    name = profile.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError("builtin profiles need a name")
    return builtin_array(name, bins)


__all__ = ["HOURLY", "builtin_array", "builtin_weights", "inline_weights", "normalize", "profile_weights", "resample"]
