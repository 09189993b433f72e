"""Per-class expression rules (SPEC §14), as expression trees over total and class rows.

`class_part(e, c)` is the class-`c` part of expression `e` before scaling, or None when `e`
carries no classes: a class-bearing reference reads its class row; `+` and `−` add and subtract
per class; SHIFT and CONV apply per class; every other operation takes the value of the operation
times the class shares of its first class-bearing operand. The result of a whole series is scaled
to its total by the class stage (`engine_live.plan.class_stages`), so the rules need not conserve.
"""

from __future__ import annotations

from collections.abc import Callable

from engine_live.expressions.syntax import Binary, Call, Expr, ListLit, Num, Ref, Unary
from engine_live.model.class_defs import class_row

IsBearing = Callable[[str], bool]
_LITERAL_ARGS = {"SHIFT": (1,), "ROLLING_MAX": (1,), "ROLLING_MEAN": (1,), "PULSE": (0, 1), "CONV": (1,)}


def _sum(parts: list[Expr]) -> Expr:
    out = parts[0]
    for part in parts[1:]:
        out = Binary("+", out, part)
    return out


def operands(expr: Expr) -> list[Expr]:
    """The operands of an operation that carry values (literal lags, windows and kernels left out)."""
    if isinstance(expr, Binary):
        return [expr.left, expr.right]
    if isinstance(expr, Unary):
        return [expr.operand]
    if isinstance(expr, Call):
        skip = _LITERAL_ARGS.get(expr.name, ())
        return [arg for i, arg in enumerate(expr.args) if i not in skip and not isinstance(arg, ListLit)]
    return []


class ClassRules:
    """The class parts of expressions for declared `classes`; `bearing(series)` says which series carry them."""

    def __init__(self, classes: tuple[str, ...], bearing: IsBearing) -> None:
        self.classes = classes
        self.bearing = bearing

    def carries(self, expr: Expr) -> bool:
        """Whether an expression reads any class-bearing series."""
        if isinstance(expr, Ref):
            return self.bearing(expr.name)
        return any(self.carries(operand) for operand in operands(expr))

    def part(self, expr: Expr, class_id: str) -> Expr | None:
        """The unscaled class-`class_id` part of `expr` (None when it carries no classes)."""
        if not self.carries(expr):
            return None
        if isinstance(expr, Ref):
            return Ref(class_row(expr.name, class_id))
        if isinstance(expr, Unary):
            inner = self.part(expr.operand, class_id)
            return inner if expr.op == "+" or inner is None else Unary("-", inner)
        if isinstance(expr, Binary) and expr.op in "+-":
            left, right = self.part(expr.left, class_id), self.part(expr.right, class_id)
            if left is None:
                return right if expr.op == "+" or right is None else Unary("-", right)
            return left if right is None else Binary(expr.op, left, right)
        if isinstance(expr, Binary) and expr.op in "*/":  # by a class-less factor: the same shares,
            if not self.carries(expr.right):  # applied to the class parts directly (fewer operations)
                return Binary(expr.op, self.part_or_zero(expr.left, class_id), expr.right)
            if expr.op == "*" and not self.carries(expr.left):
                return Binary("*", expr.left, self.part_or_zero(expr.right, class_id))
        if isinstance(expr, Call) and expr.name in ("SHIFT", "CONV"):
            inner = self.part(expr.args[0], class_id)
            assert inner is not None
            return Call(expr.name, (inner, *expr.args[1:]))
        first = self.first_bearing(expr)
        share = Binary("/", self.part_or_zero(first, class_id), self.total_of(first))
        return Binary("*", expr, share)

    def part_or_zero(self, expr: Expr, class_id: str) -> Expr:
        """`part`, with 0 for an expression without classes."""
        part = self.part(expr, class_id)
        return part if part is not None else Num(0.0)

    def total_of(self, expr: Expr) -> Expr:
        """Σ over classes of the class parts of `expr` (what its shares are taken of)."""
        return _sum([self.part_or_zero(expr, class_id) for class_id in self.classes])

    def first_bearing(self, expr: Expr) -> Expr:
        """The first class-bearing operand of an operation."""
        return next(operand for operand in operands(expr) if self.carries(operand))

    def raw(self, expr: Expr) -> tuple[tuple[Expr, ...], tuple[Expr, ...] | None]:
        """(raw class parts of a series' expression, fallback parts) — the fallback gives the shares of
        the first class-bearing term when the raw parts sum to zero or less (None: the model mix)."""
        if not _additive(expr):  # the shares of the first class-bearing operand, at any depth: the
            top = expr  # operand's own class parts are its value times its first operand's shares
            while not _additive(top) and operands(top):
                top = self.first_bearing(top)
            return tuple(self.part_or_zero(top, class_id) for class_id in self.classes), None
        raw = tuple(self.part_or_zero(expr, class_id) for class_id in self.classes)
        first = next((term for term in _terms(expr) if self.carries(term)), None)
        if first is None or first == expr:
            return raw, None
        return raw, tuple(self.part_or_zero(first, class_id) for class_id in self.classes)


def _additive(expr: Expr) -> bool:
    if isinstance(expr, Ref):
        return True
    if isinstance(expr, Binary):
        return expr.op in "+-"
    if isinstance(expr, Unary):
        return _additive(expr.operand)
    return isinstance(expr, Call) and expr.name in ("SHIFT", "CONV")


def _terms(expr: Expr) -> list[Expr]:
    """The terms of an additive chain, left to right (signs dropped)."""
    if isinstance(expr, Binary) and expr.op in "+-":
        return _terms(expr.left) + _terms(expr.right)
    if isinstance(expr, Unary):
        return _terms(expr.operand)
    return [expr]
