"""Expression kernels: one compiled closure per expression *shape*, vectorized across nodes.

Nodes whose expressions have the same structure (numbers and references abstracted into slots)
form a group; the group's closure evaluates all of them at once on a `(k, width)` block of bins.
A closure evaluates any bin range `[t0, t1)`: the whole series in batch mode, one bin in live
mode, a suffix after a correction. Every operation is elementwise in time except SHIFT, CONV,
ROLLING_* and PULSE, which read earlier bins in one fixed order, so every range evaluates to the
same bits (batch ≡ bin by bin).

Matrix layout: `V[row, t - base]` holds series `row` at bin `t`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from engine_live.expressions.syntax import Binary, Call, Expr, ListLit, Num, Ref, Unary

Fn = Callable[[np.ndarray, int, int, int], np.ndarray]  # (V, base, t0, t1) -> (k, t1 - t0) or (k, 1)


@dataclass(frozen=True)
class Slots:
    """The slot values of one expression: references, numbers and SHIFT initial values, in order."""

    refs: list[str]
    nums: list[float]
    inits: list[float]


def shape_key(expr: Expr, init_of: Callable[[str], float]) -> tuple[str, Slots]:
    """Structure of `expr` with numbers and references abstracted, plus the slot values."""
    slots = Slots([], [], [])

    def key(node: Expr) -> str:
        if isinstance(node, Num):
            slots.nums.append(node.value)
            return "N"
        if isinstance(node, Ref):
            slots.refs.append(node.name)
            return "R"
        if isinstance(node, Unary):
            return f"({node.op}{key(node.operand)})"
        if isinstance(node, Binary):
            return f"({key(node.left)}{node.op}{key(node.right)})"
        if isinstance(node, ListLit):
            return repr(node.items)
        assert isinstance(node, Call)
        name, args = node.name, node.args
        if name == "SHIFT":
            operand = args[0]
            slots.inits.append(init_of(operand.name) if isinstance(operand, Ref) else 0.0)
            return f"SHIFT({key(operand)},{int(_lit(args[1]))})"
        if name in ("ROLLING_MAX", "ROLLING_MEAN"):
            return f"{name}({key(args[0])},{int(_lit(args[1]))})"
        if name == "PULSE":
            period = int(_lit(args[0]))
            phase = int(_lit(args[1])) if len(args) > 1 else 0
            amp = key(args[2]) if len(args) > 2 else key(Num(1.0))
            return f"PULSE({period},{phase},{amp})"
        return f"{name}({','.join(key(arg) for arg in args)})"

    return key(expr), slots


class _UnitTaps(Sequence[float]):
    """`n` taps of 1.0 without materialising them: a window of 10 million bins costs nothing until
    bins exist (the loop over taps stops at the evaluated range's width)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    @overload
    def __getitem__(self, index: int) -> float: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[float]: ...
    def __getitem__(self, index: int | slice) -> float | Sequence[float]:
        if isinstance(index, slice):
            return [1.0] * len(range(*index.indices(self.n)))
        if not -self.n <= index < self.n:
            raise IndexError(index)
        return 1.0


def _lit(expr: Expr) -> float:
    assert isinstance(expr, Num)
    return expr.value


def _san_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.broadcast_arrays(num, den)
    out = np.zeros(num.shape)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _round_half_away(values: np.ndarray) -> np.ndarray:
    truncated = np.trunc(values)
    frac = values - truncated
    out: np.ndarray = truncated + np.where(frac >= 0.5, 1.0, np.where(frac <= -0.5, -1.0, 0.0))
    return out


def _mod(values: np.ndarray, divisor: np.ndarray) -> np.ndarray:
    values, divisor = np.broadcast_arrays(values, divisor)
    zero = divisor == 0
    return np.where(zero, 0.0, np.mod(values, np.where(zero, 1.0, divisor)))


_UNARY_FUNCS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "ABS": np.abs,
    "SQRT": lambda v: np.sqrt(np.where(v < 0, 0.0, v)),
    "FLOOR": np.floor,
    "CEIL": np.ceil,
    "ROUND": _round_half_away,
}
_BINARY_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "POW": np.power,
    "MOD": _mod,
    "STEP": lambda v, th: np.where(v >= th, 1.0, 0.0),
}
_OPS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "+": np.add,
    "-": np.subtract,
    "*": np.multiply,
    "/": _san_div,
}


class ShapeCompiler:
    """Compiles one shape for a group of k nodes, given every node's slots (same order)."""

    def __init__(self, k: int, rows: Sequence[np.ndarray], nums: Sequence[np.ndarray], inits: Sequence[np.ndarray]):
        self.k = k
        self.rows, self.nums, self.inits = rows, nums, inits
        self.i_ref = self.i_num = self.i_init = 0

    def full(self, values: np.ndarray, width: int) -> np.ndarray:
        """`values` broadcast to the group's (k, width) block."""
        return np.broadcast_to(values, (self.k, width))

    def compile(self, expr: Expr) -> Fn:
        """The closure of `expr` (the shape), taking the group's slots in order."""
        if isinstance(expr, Num):
            const = self.nums[self.i_num]
            self.i_num += 1
            return lambda V, base, t0, t1: const
        if isinstance(expr, Ref):
            rows = self.rows[self.i_ref]
            self.i_ref += 1
            if self.k == 1:
                row = int(rows[0])
                return lambda V, base, t0, t1: V[row : row + 1, t0 - base : t1 - base]
            return lambda V, base, t0, t1: V[rows, t0 - base : t1 - base]
        if isinstance(expr, Unary):
            inner = self.compile(expr.operand)
            if expr.op == "-":
                return lambda V, base, t0, t1: np.negative(inner(V, base, t0, t1))
            return inner
        if isinstance(expr, Binary):
            left, right, op = self.compile(expr.left), self.compile(expr.right), _OPS[expr.op]
            return lambda V, base, t0, t1: op(left(V, base, t0, t1), right(V, base, t0, t1))
        assert isinstance(expr, Call)
        return self.call(expr)

    def call(self, expr: Call) -> Fn:
        """The closure of a function call."""
        name, args = expr.name, expr.args
        if name == "SHIFT":
            return self.shift(args[0], int(_lit(args[1])))
        if name == "CONV":
            kern = args[1]
            assert isinstance(kern, ListLit)
            return self.window_sum(args[0], kern.items, mean=False)
        if name == "ROLLING_MEAN":
            window = int(_lit(args[1]))
            return self.window_sum(args[0], _UnitTaps(window), mean=True)
        if name == "ROLLING_MAX":
            return self.rolling_max(args[0], int(_lit(args[1])))
        if name == "PULSE":
            return self.pulse(args)
        fns = [self.compile(arg) for arg in args]
        if name in ("MIN", "MAX"):
            reduce = np.minimum if name == "MIN" else np.maximum

            def minmax(V: np.ndarray, base: int, t0: int, t1: int) -> np.ndarray:
                acc = fns[0](V, base, t0, t1)
                for fn in fns[1:]:
                    acc = reduce(acc, fn(V, base, t0, t1))
                return acc

            return minmax
        if name == "CLAMP":
            value_fn, lo_fn, hi_fn = fns
            return lambda V, base, t0, t1: np.minimum(
                np.maximum(value_fn(V, base, t0, t1), lo_fn(V, base, t0, t1)), hi_fn(V, base, t0, t1)
            )
        if name in _UNARY_FUNCS:
            operand_fn, unary = fns[0], _UNARY_FUNCS[name]
            return lambda V, base, t0, t1: unary(operand_fn(V, base, t0, t1))
        left_fn, right_fn, binary = fns[0], fns[1], _BINARY_FUNCS[name]
        return lambda V, base, t0, t1: binary(left_fn(V, base, t0, t1), right_fn(V, base, t0, t1))

    def shift(self, operand: Expr, lag: int) -> Fn:
        """SHIFT(operand, lag): bins before 0 read the operand's initial value."""
        init = self.inits[self.i_init]
        self.i_init += 1
        inner = self.compile(operand)
        full = self.full
        if lag == 0:
            return inner

        def shifted(V: np.ndarray, base: int, t0: int, t1: int) -> np.ndarray:
            s0, s1 = t0 - lag, t1 - lag
            if s0 >= 0:
                return inner(V, base, s0, s1)
            if s1 <= 0:
                return full(init, t1 - t0)
            return np.concatenate([full(init, -s0), full(inner(V, base, 0, s1), s1)], axis=1)

        return shifted

    def window_sum(self, operand: Expr, taps: Sequence[float], *, mean: bool) -> Fn:
        """CONV(operand, taps), or ROLLING_MEAN (unit taps, divided by the bins available)."""
        inner, full, k, n = self.compile(operand), self.full, self.k, len(taps)

        def conv(V: np.ndarray, base: int, t0: int, t1: int) -> np.ndarray:
            width = t1 - t0
            lo = max(0, t0 - n + 1)
            xs = full(inner(V, base, lo, t1), t1 - lo)
            acc = np.zeros((k, width))
            for j, tap in enumerate(taps):
                i0 = max(0, j - t0)
                if i0 >= width:
                    break
                start = t0 + i0 - j - lo
                term = xs[:, start : start + width - i0]
                acc[:, i0:] += term if mean else term * tap
            if mean:
                return acc / np.minimum(n, np.arange(t0 + 1, t1 + 1, dtype=np.float64))
            return acc

        return conv

    def rolling_max(self, operand: Expr, n: int) -> Fn:
        """ROLLING_MAX(operand, n) over the bins available."""
        inner, full, k = self.compile(operand), self.full, self.k

        def rmax(V: np.ndarray, base: int, t0: int, t1: int) -> np.ndarray:
            width = t1 - t0
            lo = max(0, t0 - n + 1)
            xs = full(inner(V, base, lo, t1), t1 - lo)
            acc = np.full((k, width), -np.inf)
            for j in range(n):
                i0 = max(0, j - t0)
                if i0 >= width:
                    break
                start = t0 + i0 - j - lo
                acc[:, i0:] = np.maximum(acc[:, i0:], xs[:, start : start + width - i0])
            return acc

        return rmax

    def pulse(self, args: tuple[Expr, ...]) -> Fn:
        """PULSE(period, phase=0, amplitude=1): the amplitude on bins phase + m·period, else 0."""
        period = int(_lit(args[0]))
        phase = int(_lit(args[1])) if len(args) > 1 else 0
        amp = self.compile(args[2] if len(args) > 2 else Num(1.0))
        full = self.full

        def pulse(V: np.ndarray, base: int, t0: int, t1: int) -> np.ndarray:
            ts = np.arange(t0, t1)
            mask = (ts >= phase) & ((ts - phase) % period == 0)
            return np.where(mask, full(amp(V, base, t0, t1), t1 - t0), 0.0)

        return pulse
