"""Tests for engine_live.expressions.parser: grammar, errors with positions, refs_of and format round-trip."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_live.errors import ExprSyntaxError, ModelError
from engine_live.expressions.parser import MAX_DEPTH, MAX_NESTING, format_expr, parse_expr, refs_of
from engine_live.expressions.syntax import Binary, Call, Expr, ListLit, Num, Ref, Unary


def strip(expr: Expr) -> Expr:
    """The same tree with every position set to 0 (structural comparison)."""
    if isinstance(expr, Unary):
        return Unary(expr.op, strip(expr.operand))
    if isinstance(expr, Binary):
        return Binary(expr.op, strip(expr.left), strip(expr.right))
    if isinstance(expr, Call):
        return Call(expr.name, tuple(strip(a) for a in expr.args))
    return dataclasses.replace(expr, pos=0)


def p(text: str) -> Expr:
    return strip(parse_expr(text))


a, b, c, x, y = Ref("a"), Ref("b"), Ref("c"), Ref("x"), Ref("y")


# ---------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a + b * c", Binary("+", a, Binary("*", b, c))),
        ("a * b + c", Binary("+", Binary("*", a, b), c)),
        ("a - b / c", Binary("-", a, Binary("/", b, c))),
        ("(a + b) * c", Binary("*", Binary("+", a, b), c)),
        ("a - b - c", Binary("-", Binary("-", a, b), c)),
        ("a / b / c", Binary("/", Binary("/", a, b), c)),
        ("a - b + c", Binary("+", Binary("-", a, b), c)),
        ("a * b / c * x", Binary("*", Binary("/", Binary("*", a, b), c), x)),
        ("a - (b - c)", Binary("-", a, Binary("-", b, c))),
        ("((a))", a),
    ],
)
def test_precedence_and_associativity(text: str, expected: Expr) -> None:
    assert p(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-a", Unary("-", a)),
        ("+a", Unary("+", a)),
        ("-a*b", Binary("*", Unary("-", a), b)),
        ("-a/b", Binary("/", Unary("-", a), b)),
        ("2*-3", Binary("*", Num(2), Unary("-", Num(3)))),
        ("a - -b", Binary("-", a, Unary("-", b))),
        ("--a", Unary("-", Unary("-", a))),
        ("-+a", Unary("-", Unary("+", a))),
        ("-(a+b)", Unary("-", Binary("+", a, b))),
        ("-a + b", Binary("+", Unary("-", a), b)),
    ],
)
def test_unary(text: str, expected: Expr) -> None:
    assert p(text) == expected


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12", 12.0),
        ("0.5", 0.5),
        ("1e3", 1000.0),
        (".5", 0.5),
        ("1.5E-3", 0.0015),
        ("1e+2", 100.0),
        ("2.", 2.0),
        ("007", 7.0),
        ("0", 0.0),
        ("1.25e1", 12.5),
    ],
)
def test_numbers(text: str, value: float) -> None:
    parsed = parse_expr(text)
    assert isinstance(parsed, Num)
    assert parsed.value == value


def test_refs_and_positions() -> None:
    assert parse_expr("  foo_1 ") == Ref("foo_1", 2)
    assert parse_expr("OrderService.arrivals") == Ref("OrderService.arrivals", 0)
    assert parse_expr("a+b*c") == Binary("+", Ref("a", 0), Binary("*", Ref("b", 2), Ref("c", 4), 3), 1)
    assert parse_expr("-x") == Unary("-", Ref("x", 1), 0)
    assert parse_expr("max(a, 1)") == Call("MAX", (Ref("a", 4), Num(1.0, 7)), 0)
    assert parse_expr("CONV(x, [1, -0.5])") == Call("CONV", (Ref("x", 5), ListLit((1.0, -0.5), 8)), 0)


def test_function_names_are_case_insensitive() -> None:
    assert p("min(a, b)") == Call("MIN", (a, b))
    assert p("Shift(x, 1)") == Call("SHIFT", (x, Num(1)))
    assert p("rolling_Mean(x, 3)") == Call("ROLLING_MEAN", (x, Num(3)))
    # a name not followed by "(" is a reference, even when it spells a function
    assert p("min + Max") == Binary("+", Ref("min"), Ref("Max"))


def test_every_function_parses() -> None:
    text = (
        "SHIFT(x, 0) + CONV(x, [0, 0.6, 0.3]) + MIN(a, b, c) + MAX(a, b) + CLAMP(x, 0, 1) + ABS(x)"
        " + SQRT(x) + FLOOR(x) + CEIL(x) + ROUND(x) + POW(a, 2) + MOD(a, b) + STEP(a, b)"
        " + PULSE(12) + PULSE(12, 3) + PULSE(12, 0, a * 2) + ROLLING_MAX(x, 1) + ROLLING_MEAN(x, 4)"
    )
    assert format_expr(parse_expr(text)) == text
    assert p("CONV(x, [-1, +2, 3e-1])") == Call("CONV", (x, ListLit((-1.0, 2.0, 0.3))))
    assert p("SHIFT(x + y, 2.0)") == Call("SHIFT", (Binary("+", x, y), Num(2)))
    assert p("PULSE(4, 1, -1)") == Call("PULSE", (Num(4), Num(1), Unary("-", Num(1))))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("", "empty expression", 0),
        ("   ", "empty expression", 0),
        ("(a + b))", "unexpected ')'", 7),
        ("a + b * c -", "unexpected end of expression", 11),
        ("MIN(a, b", "unexpected end of expression", 8),
        ("(a + b", "unexpected end of expression", 6),
        ("a b", "unexpected identifier 'b'", 2),
        ("a 2", "unexpected number '2'", 2),
        ("a * / b", "unexpected '/'", 4),
        ("()", "unexpected ')'", 1),
        ("a $ b", "unexpected character '$'", 2),
        ("a..b", "unexpected character '.'", 1),
        ("a + \u0663", "unexpected character '\u0663'", 4),
        ("MIN(a,)", "unexpected ')'", 6),
        ("MIN(,a)", "unexpected ','", 4),
        ("2x", "malformed number '2x'", 0),
        ("1 + 1e", "malformed number '1e'", 4),
        ("1.2.3", "malformed number '1.2.3'", 0),
        ("1e999", "number '1e999' is out of range", 0),
        ("FOO(a)", "unknown function 'FOO'", 0),
        ("1 + foo(a)", "unknown function 'foo'", 4),
        ("[1, 2]", "a list literal is only allowed as CONV's second argument", 0),
        ("MIN(a, [1])", "a list literal is only allowed as CONV's second argument", 7),
        ("SHIFT(x)", "SHIFT expects 2 arguments, got 1", 0),
        ("SHIFT(x, 1, 2)", "SHIFT expects 2 arguments, got 3", 0),
        ("SHIFT(x, -1)", "SHIFT expects a literal integer lag >= 0", 9),
        ("SHIFT(x, 1.5)", "SHIFT expects a literal integer lag >= 0", 9),
        ("SHIFT(x, y)", "SHIFT expects a literal integer lag >= 0", 9),
        ("SHIFT(x, 1+1)", "SHIFT expects a literal integer lag >= 0", 9),
        ("CONV(x)", "CONV expects 2 arguments, got 1", 0),
        ("CONV(x, y)", "CONV expects a kernel list [k0, k1, ...] as its second argument", 8),
        ("CONV(x, [])", "CONV expects a non-empty kernel list", 8),
        ("CONV(x, [1, y])", "CONV kernel items must be numbers, found identifier 'y'", 12),
        ("CONV(x, [1, 2)", "unexpected ')'", 13),
        ("CONV(x, [1,", "unexpected end of expression", 11),
        ("MIN(a)", "MIN expects at least 2 arguments, got 1", 0),
        ("a + max()", "MAX expects at least 2 arguments, got 0", 4),
        ("CLAMP(v, 0)", "CLAMP expects 3 arguments, got 2", 0),
        ("ABS(a, b)", "ABS expects 1 argument, got 2", 0),
        ("sqrt()", "SQRT expects 1 argument, got 0", 0),
        ("FLOOR(a, b)", "FLOOR expects 1 argument, got 2", 0),
        ("CEIL()", "CEIL expects 1 argument, got 0", 0),
        ("ROUND(a, 2)", "ROUND expects 1 argument, got 2", 0),
        ("POW(a)", "POW expects 2 arguments, got 1", 0),
        ("MOD(a, b, c)", "MOD expects 2 arguments, got 3", 0),
        ("STEP(a)", "STEP expects 2 arguments, got 1", 0),
        ("PULSE()", "PULSE expects 1 to 3 arguments, got 0", 0),
        ("PULSE(1, 0, 1, 1)", "PULSE expects 1 to 3 arguments, got 4", 0),
        ("PULSE(0)", "PULSE expects a literal integer period >= 1", 6),
        ("PULSE(x)", "PULSE expects a literal integer period >= 1", 6),
        ("PULSE(4, -1)", "PULSE expects a literal integer phase >= 0", 9),
        ("PULSE(4, 0.5)", "PULSE expects a literal integer phase >= 0", 9),
        ("ROLLING_MAX(x, 0)", "ROLLING_MAX expects a literal integer window >= 1", 15),
        ("rolling_mean(x, w)", "ROLLING_MEAN expects a literal integer window >= 1", 16),
        ("ROLLING_MEAN(x)", "ROLLING_MEAN expects 2 arguments, got 1", 0),
        # issue 12 #5: these validated but could not be evaluated
        ("PULSE(1e30)", "PULSE expects a literal integer of at most 10000000", 6),
        ("PULSE(2, 1e30)", "PULSE expects a literal integer of at most 10000000", 9),
        ("ROLLING_MEAN(a, 1e30)", "ROLLING_MEAN expects a literal integer of at most 10000000", 16),
        ("SHIFT(a, 10000001)", "SHIFT expects a literal integer of at most 10000000", 9),
    ],
)
def test_errors(text: str, message: str, position: int) -> None:
    with pytest.raises(ExprSyntaxError) as info:
        parse_expr(text)
    assert info.value.position == position
    assert info.value.message == f"{message} at position {position}"
    assert isinstance(info.value, ModelError)
    assert info.value.to_body()["error"] == "expr_syntax"


def test_nesting_limits() -> None:
    ok = "(" * MAX_NESTING + "a" + ")" * MAX_NESTING
    assert p(ok) == a
    with pytest.raises(ExprSyntaxError, match="nested too deeply"):
        parse_expr("(" * (MAX_NESTING + 1) + "a" + ")" * (MAX_NESTING + 1))
    with pytest.raises(ExprSyntaxError, match="nested too deeply"):
        parse_expr("-" * MAX_DEPTH + "a")
    assert p("-" * (MAX_DEPTH - 1) + "a") is not None
    with pytest.raises(ExprSyntaxError, match="nested too deeply"):
        parse_expr(" + ".join(["a"] * (MAX_DEPTH + 1)))


# ---------------------------------------------------------------- refs_of


@pytest.mark.parametrize(
    ("text", "same", "shifted"),
    [
        ("a + b * 2", {"a", "b"}, set()),
        ("SHIFT(x, 1)", set(), {"x"}),
        ("SHIFT(x, 0)", {"x"}, set()),
        ("SHIFT(x + y, 2)", set(), {"x", "y"}),
        ("MAX(0, SHIFT(backlog, 1) + arrivals - served)", {"arrivals", "served"}, {"backlog"}),
        ("x + SHIFT(x, 1)", {"x"}, {"x"}),
        ("CONV(x, [0, 1])", {"x"}, set()),
        ("ROLLING_MAX(x, 3) + ROLLING_MEAN(y, 2)", {"x", "y"}, set()),
        ("SHIFT(SHIFT(a, 0), 1)", set(), {"a"}),
        ("SHIFT(SHIFT(a, 1), 0)", set(), {"a"}),
        ("SHIFT(CONV(a, [1]), 3)", set(), {"a"}),
        ("PULSE(3, 1, amp) * OrderService.arrivals", {"amp", "OrderService.arrivals"}, set()),
        ("12", set(), set()),
    ],
)
def test_refs_of(text: str, same: set[str], shifted: set[str]) -> None:
    assert refs_of(parse_expr(text)) == (same, shifted)


# ---------------------------------------------------------------- format


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("a+b*c", "a + b * c"),
        ("(a+b)*c", "(a + b) * c"),
        ("a-(b-c)", "a - (b - c)"),
        ("(a-b)-c", "a - b - c"),
        ("a/(b*c)", "a / (b * c)"),
        ("-(a+b)", "-(a + b)"),
        ("-(-a)", "--a"),
        ("2*-3", "2 * -3"),
        ("shift(x,1.0)", "SHIFT(x, 1)"),
        ("conv(x,[0,.6,-1e-7])", "CONV(x, [0, 0.6, -1e-07])"),
        ("1.5E-3 + 1e3 + 1e20", "0.0015 + 1000 + 1e+20"),
    ],
)
def test_format_canonical(text: str, canonical: str) -> None:
    assert format_expr(parse_expr(text)) == canonical
    assert format_expr(parse_expr(canonical)) == canonical


_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,6}(\.[A-Za-z_][A-Za-z0-9_]{0,6})?", fullmatch=True)
_nums = st.floats(min_value=0.0, allow_nan=False, allow_infinity=False).map(Num)
_ints0 = st.integers(0, 50).map(lambda i: Num(float(i)))
_ints1 = st.integers(1, 50).map(lambda i: Num(float(i)))
_kernel = st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4).map(
    lambda items: ListLit(tuple(items))
)
_SIMPLE = {"ABS": 1, "SQRT": 1, "FLOOR": 1, "CEIL": 1, "ROUND": 1, "POW": 2, "MOD": 2, "STEP": 2, "CLAMP": 3}


def _extend(inner: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
    def call(name: str, *args: st.SearchStrategy[Expr]) -> st.SearchStrategy[Expr]:
        return st.tuples(*args).map(lambda xs: Call(name, tuple(xs)))

    return st.one_of(
        st.builds(Unary, st.sampled_from("+-"), inner),
        st.builds(Binary, st.sampled_from("+-*/"), inner, inner),
        st.sampled_from(sorted(_SIMPLE)).flatmap(lambda n: call(n, *[inner] * _SIMPLE[n])),
        st.builds(
            lambda n, xs: Call(n, tuple(xs)),
            st.sampled_from(["MIN", "MAX"]),
            st.lists(inner, min_size=2, max_size=4),
        ),
        call("SHIFT", inner, _ints0),
        call("CONV", inner, _kernel),
        call("ROLLING_MAX", inner, _ints1),
        call("ROLLING_MEAN", inner, _ints1),
        call("PULSE", _ints1),
        call("PULSE", _ints1, _ints0),
        call("PULSE", _ints1, _ints0, inner),
    )


_exprs = st.recursive(st.one_of(_nums, _names.map(Ref)), _extend, max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(_exprs)
def test_format_round_trips(expr: Expr) -> None:
    text = format_expr(expr)
    assert strip(parse_expr(text)) == strip(expr)
    assert format_expr(parse_expr(text)) == text
