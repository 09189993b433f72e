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

import numpy as np

from engine_live.expressions.syntax import Binary, Call, Expr, ListLit, Num, Ref, Unary

Fn = Callable[[np.ndarray, int, int, int], np.ndarray]  # (V, base, t0, t1) -> (k, t1 - t0) or (k, 1)


@dataclass(frozen=True)
class Slots:
    refs: list[str]
    nums: list[float]
    inits: list[float]


def shape_key(expr: Expr, init_of: Callable[[str], float]) -> tuple[str, Slots]:
    """Structure of `expr` with numbers and references abstracted, plus the slot values."""
    slots = Slots([], [], [])

    def key(e: Expr) -> str:
        if isinstance(e, Num):
            slots.nums.append(e.value)
            return "N"
        if isinstance(e, Ref):
            slots.refs.append(e.name)
            return "R"
        if isinstance(e, Unary):
            return f"({e.op}{key(e.operand)})"
        if isinstance(e, Binary):
            return f"({key(e.left)}{e.op}{key(e.right)})"
        if isinstance(e, ListLit):
            return repr(e.items)
        assert isinstance(e, Call)
        name, args = e.name, e.args
        if name == "SHIFT":
            x = args[0]
            slots.inits.append(init_of(x.name) if isinstance(x, Ref) else 0.0)
            return f"SHIFT({key(x)},{int(_lit(args[1]))})"
        if name in ("ROLLING_MAX", "ROLLING_MEAN"):
            return f"{name}({key(args[0])},{int(_lit(args[1]))})"
        if name == "PULSE":
            period = int(_lit(args[0]))
            phase = int(_lit(args[1])) if len(args) > 1 else 0
            amp = key(args[2]) if len(args) > 2 else key(Num(1.0))
            return f"PULSE({period},{phase},{amp})"
        return f"{name}({','.join(key(a) for a in args)})"

    return key(expr), slots


def _lit(e: Expr) -> float:
    assert isinstance(e, Num)
    return e.value


def _san_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.broadcast_arrays(a, b)
    out = np.zeros(a.shape)
    np.divide(a, b, out=out, where=b != 0)
    return out


def _round_half_away(v: np.ndarray) -> np.ndarray:
    tr = np.trunc(v)
    d = v - tr
    out: np.ndarray = tr + np.where(d >= 0.5, 1.0, np.where(d <= -0.5, -1.0, 0.0))
    return out


def _mod(v: np.ndarray, d: np.ndarray) -> np.ndarray:
    v, d = np.broadcast_arrays(v, d)
    zero = d == 0
    return np.where(zero, 0.0, np.mod(v, np.where(zero, 1.0, d)))


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

    def full(self, x: np.ndarray, width: int) -> np.ndarray:
        return np.broadcast_to(x, (self.k, width))

    def compile(self, e: Expr) -> Fn:
        if isinstance(e, Num):
            c = self.nums[self.i_num]
            self.i_num += 1
            return lambda V, b, t0, t1: c
        if isinstance(e, Ref):
            rows = self.rows[self.i_ref]
            self.i_ref += 1
            if self.k == 1:
                r = int(rows[0])
                return lambda V, b, t0, t1: V[r : r + 1, t0 - b : t1 - b]
            return lambda V, b, t0, t1: V[rows, t0 - b : t1 - b]
        if isinstance(e, Unary):
            inner = self.compile(e.operand)
            if e.op == "-":
                return lambda V, b, t0, t1: np.negative(inner(V, b, t0, t1))
            return inner
        if isinstance(e, Binary):
            left, right, op = self.compile(e.left), self.compile(e.right), _OPS[e.op]
            return lambda V, b, t0, t1: op(left(V, b, t0, t1), right(V, b, t0, t1))
        assert isinstance(e, Call)
        return self.call(e)

    def call(self, e: Call) -> Fn:
        name, args = e.name, e.args
        if name == "SHIFT":
            return self.shift(args[0], int(_lit(args[1])))
        if name == "CONV":
            kern = args[1]
            assert isinstance(kern, ListLit)
            return self.window_sum(args[0], kern.items, mean=False)
        if name == "ROLLING_MEAN":
            w = int(_lit(args[1]))
            return self.window_sum(args[0], (1.0,) * w, mean=True)
        if name == "ROLLING_MAX":
            return self.rolling_max(args[0], int(_lit(args[1])))
        if name == "PULSE":
            return self.pulse(args)
        fns = [self.compile(a) for a in args]
        if name in ("MIN", "MAX"):
            red = np.minimum if name == "MIN" else np.maximum

            def minmax(V: np.ndarray, b: int, t0: int, t1: int) -> np.ndarray:
                acc = fns[0](V, b, t0, t1)
                for f in fns[1:]:
                    acc = red(acc, f(V, b, t0, t1))
                return acc

            return minmax
        if name == "CLAMP":
            v, lo, hi = fns
            return lambda V, b, t0, t1: np.minimum(np.maximum(v(V, b, t0, t1), lo(V, b, t0, t1)), hi(V, b, t0, t1))
        if name in _UNARY_FUNCS:
            f1, g = fns[0], _UNARY_FUNCS[name]
            return lambda V, b, t0, t1: g(f1(V, b, t0, t1))
        f2a, f2b, h = fns[0], fns[1], _BINARY_FUNCS[name]
        return lambda V, b, t0, t1: h(f2a(V, b, t0, t1), f2b(V, b, t0, t1))

    def shift(self, x: Expr, lag: int) -> Fn:
        init = self.inits[self.i_init]
        self.i_init += 1
        inner = self.compile(x)
        full = self.full
        if lag == 0:
            return inner

        def shifted(V: np.ndarray, b: int, t0: int, t1: int) -> np.ndarray:
            s0, s1 = t0 - lag, t1 - lag
            if s0 >= 0:
                return inner(V, b, s0, s1)
            if s1 <= 0:
                return full(init, t1 - t0)
            return np.concatenate([full(init, -s0), full(inner(V, b, 0, s1), s1)], axis=1)

        return shifted

    def window_sum(self, x: Expr, taps: tuple[float, ...], *, mean: bool) -> Fn:
        inner, full, k, n = self.compile(x), self.full, self.k, len(taps)

        def conv(V: np.ndarray, b: int, t0: int, t1: int) -> np.ndarray:
            w = t1 - t0
            lo = max(0, t0 - n + 1)
            xs = full(inner(V, b, lo, t1), t1 - lo)
            acc = np.zeros((k, w))
            for j, kj in enumerate(taps):
                i0 = max(0, j - t0)
                if i0 >= w:
                    break
                a = t0 + i0 - j - lo
                term = xs[:, a : a + w - i0]
                acc[:, i0:] += term if mean else term * kj
            if mean:
                return acc / np.minimum(n, np.arange(t0 + 1, t1 + 1, dtype=np.float64))
            return acc

        return conv

    def rolling_max(self, x: Expr, n: int) -> Fn:
        inner, full, k = self.compile(x), self.full, self.k

        def rmax(V: np.ndarray, b: int, t0: int, t1: int) -> np.ndarray:
            w = t1 - t0
            lo = max(0, t0 - n + 1)
            xs = full(inner(V, b, lo, t1), t1 - lo)
            acc = np.full((k, w), -np.inf)
            for j in range(n):
                i0 = max(0, j - t0)
                if i0 >= w:
                    break
                a = t0 + i0 - j - lo
                acc[:, i0:] = np.maximum(acc[:, i0:], xs[:, a : a + w - i0])
            return acc

        return rmax

    def pulse(self, args: tuple[Expr, ...]) -> Fn:
        period = int(_lit(args[0]))
        phase = int(_lit(args[1])) if len(args) > 1 else 0
        amp = self.compile(args[2] if len(args) > 2 else Num(1.0))
        full = self.full

        def pulse(V: np.ndarray, b: int, t0: int, t1: int) -> np.ndarray:
            ts = np.arange(t0, t1)
            mask = (ts >= phase) & ((ts - phase) % period == 0)
            return np.where(mask, full(amp(V, b, t0, t1), t1 - t0), 0.0)

        return pulse
