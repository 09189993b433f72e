"""Expression parser: tokenizer, recursive-descent parser and canonical formatter (SPEC §2 Expressions).

Public API: `parse_expr(text) -> Expr`, `refs_of(expr) -> (same_bin_refs, shifted_refs)` and
`format_expr(expr) -> str`. Every problem raises `ExprSyntaxError(message, position)` with the 0-based
character offset of the offending token. No `eval`, no `ast`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from engine_live.errors import ExprSyntaxError
from engine_live.expressions.syntax import Binary, Call, Expr, ListLit, Num, Ref, Unary

MAX_NESTING = 64
"""Most parentheses / calls open at once."""
MAX_DEPTH = 200
"""Deepest AST accepted (keeps every recursive consumer far from Python's recursion limit)."""

_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<num>(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"
    r"|(?P<op>[-+*/(),\[\]])"
)
_NUMBER_TAIL_RE = re.compile(r"[A-Za-z0-9_.]")


@dataclass(frozen=True)
class _Tok:
    kind: str  # "num", "ident", "op", "end"
    text: str
    pos: int

    def describe(self) -> str:
        if self.kind == "num":
            return f"number '{self.text}'"
        if self.kind == "ident":
            return f"identifier '{self.text}'"
        return f"'{self.text}'"


def _tokenize(text: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            raise ExprSyntaxError(f"unexpected character {text[pos]!r}", pos)
        kind = m.lastgroup or ""
        if kind == "num" and _NUMBER_TAIL_RE.match(text, m.end()):
            bad = re.match(r"[A-Za-z0-9_.+-]*", text[m.end() :])
            tail = bad.group(0) if bad else ""
            raise ExprSyntaxError(f"malformed number '{m.group(0)}{tail}'", pos)
        if kind != "ws":
            toks.append(_Tok(kind, m.group(0), pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(text)))
    return toks


MAX_LITERAL_INT = 10_000_000
"""The largest literal lag, period, phase or window: 10 million bins (95 years of 5-minute bins).
Larger ones validated before but could not be evaluated (an overflow, or gigabytes of taps)."""


def _literal_int(arg: Expr, minimum: int) -> bool:
    return isinstance(arg, Num) and float(arg.value).is_integer() and arg.value >= minimum


def _scalar(arg: Expr) -> float | None:
    """The number a literal (or a signed literal) stands for, else None."""
    if isinstance(arg, Num):
        return arg.value
    if isinstance(arg, Unary) and isinstance(arg.operand, Num):
        return -arg.operand.value if arg.op == "-" else arg.operand.value
    return None


def _arity_msg(name: str, lo: int, hi: int | None, got: int) -> str:
    if hi is None:
        want = f"at least {lo} arguments"
    elif lo == hi:
        want = f"{lo} argument{'s' if lo != 1 else ''}"
    else:
        want = f"{lo} to {hi} arguments"
    return f"{name} expects {want}, got {got}"


# name -> (min args, max args or None for unbounded)
_ARITY: dict[str, tuple[int, int | None]] = {
    "SHIFT": (2, 2),
    "CONV": (2, 2),
    "MIN": (2, None),
    "MAX": (2, None),
    "CLAMP": (3, 3),
    "ABS": (1, 1),
    "SQRT": (1, 1),
    "FLOOR": (1, 1),
    "CEIL": (1, 1),
    "ROUND": (1, 1),
    "POW": (2, 2),
    "MOD": (2, 2),
    "STEP": (2, 2),
    "PULSE": (1, 3),
    "ROLLING_MAX": (2, 2),
    "ROLLING_MEAN": (2, 2),
}
FUNCTIONS: frozenset[str] = frozenset(_ARITY)
"""Every function name the language knows (upper case)."""

# (function, argument index) -> (minimum, what the message calls it)
_LITERAL_INTS: dict[tuple[str, int], tuple[int, str]] = {
    ("SHIFT", 1): (0, "a literal integer lag >= 0"),
    ("PULSE", 0): (1, "a literal integer period >= 1"),
    ("PULSE", 1): (0, "a literal integer phase >= 0"),
    ("ROLLING_MAX", 1): (1, "a literal integer window >= 1"),
    ("ROLLING_MEAN", 1): (1, "a literal integer window >= 1"),
}


class _Parser:
    def __init__(self, text: str) -> None:
        self.toks = _tokenize(text)
        self.i = 0
        self.nesting = 0

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def advance(self) -> _Tok:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def at(self, *texts: str) -> bool:
        return self.tok.kind == "op" and self.tok.text in texts

    def accept(self, text: str) -> bool:
        if self.at(text):
            self.i += 1
            return True
        return False

    def unexpected(self) -> ExprSyntaxError:
        tok = self.tok
        if tok.kind == "end":
            return ExprSyntaxError("unexpected end of expression", tok.pos)
        return ExprSyntaxError(f"unexpected {tok.describe()}", tok.pos)

    def expect(self, text: str) -> _Tok:
        if not self.at(text):
            raise self.unexpected()
        return self.advance()

    def enter(self, pos: int) -> None:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise ExprSyntaxError(f"expression nested too deeply (more than {MAX_NESTING} levels)", pos)

    def parse(self) -> Expr:
        if self.tok.kind == "end":
            raise ExprSyntaxError("empty expression", 0)
        expr = self.expr()
        if self.tok.kind != "end":
            raise self.unexpected()
        return expr

    def binary_level(self, ops: str, operand: Callable[[], Expr]) -> Expr:
        left = operand()
        while self.at(*ops):
            op = self.advance()
            left = Binary(op.text, left, operand(), op.pos)
        return left

    def expr(self) -> Expr:
        return self.binary_level("+-", self.term)

    def term(self) -> Expr:
        return self.binary_level("*/", self.unary)

    def unary(self) -> Expr:
        signs: list[_Tok] = []
        while self.at("+", "-"):
            signs.append(self.advance())
        expr = self.primary()
        for sign in reversed(signs):
            expr = Unary(sign.text, expr, sign.pos)
        return expr

    def primary(self) -> Expr:
        tok = self.tok
        if tok.kind == "num":
            self.advance()
            return Num(self.number_value(tok), tok.pos)
        if tok.kind == "ident":
            self.advance()
            return self.call(tok) if self.at("(") else Ref(tok.text, tok.pos)
        if self.accept("("):
            self.enter(tok.pos)
            inner = self.expr()
            self.expect(")")
            self.nesting -= 1
            return inner
        if self.at("["):
            raise ExprSyntaxError("a list literal is only allowed as CONV's second argument", tok.pos)
        raise self.unexpected()

    @staticmethod
    def number_value(tok: _Tok) -> float:
        value = float(tok.text)
        if not math.isfinite(value):
            raise ExprSyntaxError(f"number '{tok.text}' is out of range", tok.pos)
        return value

    def call(self, name_tok: _Tok) -> Expr:
        name = name_tok.text.upper()
        if name not in _ARITY:
            raise ExprSyntaxError(f"unknown function '{name_tok.text}'", name_tok.pos)
        self.enter(name_tok.pos)
        self.expect("(")
        args: list[Expr] = []
        starts: list[int] = []
        more = not self.at(")")
        while more:
            starts.append(self.tok.pos)
            is_kernel = name == "CONV" and len(args) == 1 and self.at("[")
            args.append(self.list_literal() if is_kernel else self.expr())
            more = self.accept(",")
        self.expect(")")
        self.nesting -= 1
        if name == "CONV" and len(args) == 2 and (scalar := _scalar(args[1])) is not None:
            args[1] = ListLit((scalar,), args[1].pos)  # upstream's CONV(x, c) is a one-tap kernel
        self.check_call(name, args, starts, name_tok.pos)
        return Call(name, tuple(args), name_tok.pos)

    def list_literal(self) -> ListLit:
        open_tok = self.expect("[")
        items: list[float] = []
        if self.at("]"):
            raise ExprSyntaxError("CONV expects a non-empty kernel list", open_tok.pos)
        while True:
            sign = -1.0 if self.at("-") else 1.0
            if self.at("+", "-"):
                self.advance()
            if self.tok.kind != "num":
                if self.tok.kind == "end":
                    raise self.unexpected()
                raise ExprSyntaxError(f"CONV kernel items must be numbers, found {self.tok.describe()}", self.tok.pos)
            items.append(sign * self.number_value(self.advance()))
            if not self.accept(","):
                self.expect("]")
                return ListLit(tuple(items), open_tok.pos)

    @staticmethod
    def check_call(name: str, args: list[Expr], starts: list[int], pos: int) -> None:
        lo, hi = _ARITY[name]
        if len(args) < lo or (hi is not None and len(args) > hi):
            raise ExprSyntaxError(_arity_msg(name, lo, hi, len(args)), pos)
        for index, (arg, start) in enumerate(zip(args, starts, strict=True)):
            rule = _LITERAL_INTS.get((name, index))
            if rule is not None and not _literal_int(arg, rule[0]):
                raise ExprSyntaxError(f"{name} expects {rule[1]}", start)
            if rule is not None and isinstance(arg, Num) and arg.value > MAX_LITERAL_INT:
                raise ExprSyntaxError(f"{name} expects a literal integer of at most {MAX_LITERAL_INT}", start)
        if name == "CONV" and not isinstance(args[1], ListLit):
            raise ExprSyntaxError("CONV expects a kernel list [k0, k1, ...] as its second argument", starts[1])


def _children(expr: Expr) -> tuple[Expr, ...]:
    if isinstance(expr, Unary):
        return (expr.operand,)
    if isinstance(expr, Binary):
        return (expr.left, expr.right)
    if isinstance(expr, Call):
        return expr.args
    return ()


def _check_depth(root: Expr) -> None:
    stack: list[tuple[Expr, int]] = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ExprSyntaxError(f"expression nested too deeply (more than {MAX_DEPTH} levels)", node.pos)
        stack.extend((child, depth + 1) for child in _children(node))


def longest_window(root: Expr) -> int:
    """The longest literal ROLLING_MEAN / ROLLING_MAX window in the expression (0 without one)."""
    longest, stack = 0, [root]
    while stack:
        node = stack.pop()
        if isinstance(node, Call) and node.name in ("ROLLING_MEAN", "ROLLING_MAX") and isinstance(node.args[1], Num):
            longest = max(longest, int(node.args[1].value))
        stack.extend(_children(node))
    return longest


def parse_expr(text: str) -> Expr:
    """Parse one expression; raise `ExprSyntaxError` naming the position of the first problem."""
    expr = _Parser(text).parse()
    _check_depth(expr)
    return expr


def refs_of(expr: Expr) -> tuple[set[str], set[str]]:
    """Return (same_bin_refs, shifted_refs). A reference anywhere inside `SHIFT(·, k)` with a literal
    k ≥ 1 reads previous bins only ("shifted"); every other reference — including inside
    `SHIFT(·, 0)`, CONV and ROLLING_* — is a same-bin dependency. A name may be in both sets."""
    same: set[str] = set()
    shifted: set[str] = set()
    stack: list[tuple[Expr, bool]] = [(expr, False)]
    while stack:
        node, in_shift = stack.pop()
        if isinstance(node, Ref):
            (shifted if in_shift else same).add(node.name)
        elif isinstance(node, Call) and node.name == "SHIFT" and len(node.args) == 2:
            lag = node.args[1]
            lagged = in_shift or _literal_int(lag, 1)
            stack.append((node.args[0], lagged))
            stack.append((lag, in_shift))
        else:
            stack.extend((child, in_shift) for child in _children(node))
    return same, shifted


def _format_number(value: float) -> str:
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


def _precedence(expr: Expr) -> int:
    if isinstance(expr, Binary):
        return _PRECEDENCE[expr.op]
    if isinstance(expr, Unary):
        return 3
    return 4


def format_expr(expr: Expr) -> str:
    """Canonical text of an AST produced by `parse_expr`: minimal parentheses, `a + b`, `F(x, y)`,
    upper-case function names, integral numbers without a fraction. `parse_expr(format_expr(e))`
    equals `e` up to positions."""
    if isinstance(expr, Num):
        return _format_number(expr.value)
    if isinstance(expr, Ref):
        return expr.name
    if isinstance(expr, ListLit):
        return "[" + ", ".join(_format_number(v) for v in expr.items) + "]"
    if isinstance(expr, Unary):
        inner = format_expr(expr.operand)
        return expr.op + (f"({inner})" if _precedence(expr.operand) < 3 else inner)
    if isinstance(expr, Binary):
        prec = _PRECEDENCE[expr.op]
        left, right = format_expr(expr.left), format_expr(expr.right)
        if _precedence(expr.left) < prec:
            left = f"({left})"
        if _precedence(expr.right) <= prec:
            right = f"({right})"
        return f"{left} {expr.op} {right}"
    return f"{expr.name}(" + ", ".join(format_expr(a) for a in expr.args) + ")"


__all__ = ["FUNCTIONS", "MAX_DEPTH", "MAX_NESTING", "format_expr", "parse_expr", "refs_of"]
