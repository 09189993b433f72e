"""PCG32 exactly as SPEC §2 pmf: a plain-int reference generator (`Pcg32`), a vectorized jump-ahead
(`pcg32_outputs`) and sampled pmf draws (`pmf_draws`).

Output number n (0-based) is the one produced by the (n+1)-th `next()` after creation, i.e. after the
creation step whose output is discarded. The LCG state after n steps is `A^n·s + C_n (mod 2^64)`;
`pcg32_outputs` gets the first state by O(log n) jump-ahead in Python ints and then fills all states
by doubling (`states[m:2m] = A^m·states[:m] + C_m`) with wrapping numpy uint64 arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

MASK64 = (1 << 64) - 1
MULTIPLIER = 6364136223846793005
INCREMENT = 1442695040888963407


def _output(old: int) -> int:
    xorshifted = (((old >> 18) ^ old) >> 27) & 0xFFFFFFFF
    rot = old >> 59
    return ((xorshifted >> rot) | (xorshifted << ((-rot) & 31))) & 0xFFFFFFFF


class Pcg32:
    """Reference PCG32 (plain Python ints). The seed is taken modulo 2^64."""

    __slots__ = ("state",)

    def __init__(self, seed: int) -> None:
        self.state = seed & MASK64
        self.next()  # creation step, output discarded

    def next(self) -> int:
        """Advance the generator one step and return its next 32-bit output."""
        old = self.state
        self.state = (old * MULTIPLIER + INCREMENT) & MASK64
        return _output(old)


def _jump(steps: int) -> tuple[int, int]:
    """(A, C) with LCG^steps(s) = A·s + C (mod 2^64)."""
    acc_mult, acc_plus = 1, 0
    cur_mult, cur_plus = MULTIPLIER, INCREMENT
    while steps > 0:
        if steps & 1:
            acc_mult = (acc_mult * cur_mult) & MASK64
            acc_plus = (acc_plus * cur_mult + cur_plus) & MASK64
        cur_plus = (cur_plus * (cur_mult + 1)) & MASK64
        cur_mult = (cur_mult * cur_mult) & MASK64
        steps >>= 1
    return acc_mult, acc_plus


def pcg32_outputs(seed: int, start: int, count: int) -> npt.NDArray[np.uint32]:
    """Outputs number start .. start+count-1 of `Pcg32(seed)` as uint32, without a per-output loop."""
    if start < 0 or count < 0:
        raise ValueError(f"start and count must be >= 0, got start={start}, count={count}")
    states = np.empty(count, dtype=np.uint64)
    if count == 0:
        return np.empty(0, dtype=np.uint32)
    mult, plus = _jump(start + 1)
    states[0] = (mult * (seed & MASK64) + plus) & MASK64  # the `old` state of output `start`
    filled = 1
    with np.errstate(over="ignore"):
        while filled < count:
            take = min(filled, count - filled)
            mult, plus = _jump(filled)
            np.multiply(states[:take], np.uint64(mult), out=states[filled : filled + take])
            np.add(states[filled : filled + take], np.uint64(plus), out=states[filled : filled + take])
            filled += take
        xorshifted = (((states >> np.uint64(18)) ^ states) >> np.uint64(27)).astype(np.uint32)
        rot = (states >> np.uint64(59)).astype(np.uint32)
        left = (np.uint32(32) - rot) & np.uint32(31)
        out: npt.NDArray[np.uint32] = (xorshifted >> rot) | (xorshifted << left)
    return out


def pmf_draws(
    values: Sequence[float], probabilities: Sequence[float], seed: int, start: int, count: int
) -> npt.NDArray[np.float64]:
    """Draws number start .. start+count-1 of a sampled pmf node (draw n belongs to bin n).

    u = output / 2^32; the draw is the first value whose cumulative probability (accumulated left to
    right, `c += p`) is ≥ u, or the last value when rounding leaves none."""
    if len(values) == 0 or len(values) != len(probabilities):
        raise ValueError("values and probabilities must be non-empty and of equal length")
    cumulative: list[float] = []
    running = 0.0
    best = -np.inf
    for p in probabilities:
        running += p
        best = max(best, running)  # "first index with c >= u" equals it on the running maximum
        cumulative.append(best)
    u = pcg32_outputs(seed, start, count).astype(np.float64) / 4294967296.0
    index = np.searchsorted(np.asarray(cumulative, dtype=np.float64), u, side="left")
    np.minimum(index, len(values) - 1, out=index)
    result: npt.NDArray[np.float64] = np.asarray(values, dtype=np.float64)[index]
    return result


__all__ = ["INCREMENT", "MASK64", "MULTIPLIER", "Pcg32", "pcg32_outputs", "pmf_draws"]
