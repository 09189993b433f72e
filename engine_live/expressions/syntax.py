"""Expression AST: what the parser produces and the compiler consumes. Frozen dataclasses only."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Num:
    """A number literal."""

    value: float
    pos: int = 0


@dataclass(frozen=True)
class Ref:
    """A reference to a series id."""

    name: str
    pos: int = 0


@dataclass(frozen=True)
class Unary:
    """A sign applied to one operand (`op` is `-` or `+`)."""

    op: str  # "-" or "+"
    operand: Expr
    pos: int = 0


@dataclass(frozen=True)
class Binary:
    """An arithmetic operation on two operands (`op` is one of `+ - * /`)."""

    op: str  # "+", "-", "*", "/"
    left: Expr
    right: Expr
    pos: int = 0


@dataclass(frozen=True)
class Call:
    """A function call; `name` is upper-cased. Literal-integer arguments (SHIFT k, PULSE period and
    phase, ROLLING_* window) stay `Num` nodes; CONV's kernel is a `ListLit`."""

    name: str
    args: tuple[Expr, ...]
    pos: int = 0


@dataclass(frozen=True)
class ListLit:
    """A list of number literals (CONV's kernel)."""

    items: tuple[float, ...]
    pos: int = 0


Expr = Num | Ref | Unary | Binary | Call | ListLit
