"""Raw class parts as linear forms over matrix rows (SPEC §14 class stages, the fast path).

Most raw class parts are linear in class rows: `a@c − 0.1 · b@c`, `SHIFT(a@c, 1)`, a constant share,
`CONV(a@c, [0.5, 0.5])`. Such a part is `const + Σ coef · row[t − lag]` (a row read before bin 0
reads 0), and the compiled kernel evaluates it in place (`class_kernels.split_linear`): no closure,
no temporary. Anything else (MIN, a SHIFT of a sum, a product of two class-bearing terms) gives None
and keeps its expression closure. The order of the terms is fixed by the expression, so a part gets
the same bits in every range it is evaluated in.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from engine_live.expressions.syntax import Binary, Call, Expr, ListLit, Num, Ref, Unary

Term = tuple[float, str, int]  # coefficient, series id, lag


@dataclass(frozen=True)
class LinearForm:
    """`const + Σ coef · series[t − lag]`."""

    const: float
    terms: tuple[Term, ...]

    def scaled(self, factor: float) -> LinearForm:
        """This form times a constant."""
        return LinearForm(self.const * factor, tuple((coef * factor, sid, lag) for coef, sid, lag in self.terms))

    def plus(self, other: LinearForm, sign: float = 1.0) -> LinearForm:
        """This form plus (or minus) another."""
        right = other if sign > 0 else other.scaled(-1.0)
        return LinearForm(self.const + right.const, self.terms + right.terms)


def _lag(expr: Expr) -> int | None:
    if isinstance(expr, Num) and expr.value >= 0 and float(expr.value).is_integer():
        return int(expr.value)
    return None


def linear_form(expr: Expr, known: Callable[[str], bool], init_of: Callable[[str], float]) -> LinearForm | None:
    """The linear form of an expression over series `known` has rows for, or None."""
    if isinstance(expr, Num):
        return LinearForm(float(expr.value), ())
    if isinstance(expr, Ref):
        return LinearForm(0.0, ((1.0, expr.name, 0),)) if known(expr.name) else None
    if isinstance(expr, Unary):
        inner = linear_form(expr.operand, known, init_of)
        return inner if inner is None or expr.op == "+" else inner.scaled(-1.0)
    if isinstance(expr, Binary):
        left, right = linear_form(expr.left, known, init_of), linear_form(expr.right, known, init_of)
        if left is None or right is None:
            return None
        if expr.op in "+-":
            return left.plus(right, 1.0 if expr.op == "+" else -1.0)
        if expr.op == "*" and not left.terms:
            return right.scaled(left.const)
        if expr.op == "*" and not right.terms:
            return left.scaled(right.const)
        if expr.op == "/" and not right.terms and right.const != 0:
            return left.scaled(1.0 / right.const)
        return None
    if isinstance(expr, Call) and expr.name in ("SHIFT", "CONV") and len(expr.args) == 2:
        operand, arg = expr.args
        if not isinstance(operand, Ref) or not known(operand.name) or init_of(operand.name) != 0.0:
            return None
        if expr.name == "SHIFT":
            lag = _lag(arg)
            return None if lag is None else LinearForm(0.0, ((1.0, operand.name, lag),))
        if isinstance(arg, ListLit):
            return LinearForm(0.0, tuple((float(tap), operand.name, j) for j, tap in enumerate(arg.items)))
    return None


@dataclass(frozen=True)
class LinearParts:
    """Forms of K classes × n members as arrays for the kernel, terms padded with 0 · the zero row."""

    const: np.ndarray  # (K, n)
    coef: np.ndarray  # (K, n, T)
    rows: np.ndarray  # (K, n, T)
    lags: np.ndarray  # (K, n, T)

    @classmethod
    def of(cls, forms: Sequence[Sequence[LinearForm]], row: Callable[[str], int], zero_row: int) -> LinearParts:
        """`forms[c][i]`: class c of member i."""
        k, n = len(forms), len(forms[0])
        width = max(1, max(len(form.terms) for per_class in forms for form in per_class))
        const = np.zeros((k, n))
        coef = np.zeros((k, n, width))
        rows = np.full((k, n, width), zero_row, dtype=np.intp)
        lags = np.zeros((k, n, width), dtype=np.intp)
        for c, per_class in enumerate(forms):
            for i, form in enumerate(per_class):
                const[c, i] = form.const
                for m, (factor, sid, lag) in enumerate(form.terms):
                    coef[c, i, m], rows[c, i, m], lags[c, i, m] = factor, row(sid), lag
        return cls(const, coef, rows, lags)

    @classmethod
    def empty(cls) -> LinearParts:
        """No parts (a split without a fallback)."""
        return cls(
            np.zeros((0, 0)),
            np.zeros((0, 0, 0)),
            np.zeros((0, 0, 0), dtype=np.intp),
            np.zeros((0, 0, 0), dtype=np.intp),
        )
