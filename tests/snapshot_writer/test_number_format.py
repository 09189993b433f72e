"""Number text of the artifact CSVs: shortest round-trip, one fixed form (SPEC §12.10)."""

from __future__ import annotations

import hashlib
import math
import re
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snapshot_writer import number_format
from snapshot_writer.number_format import (
    CSV_HEADER,
    format_value,
    format_values,
    iter_csv_bodies,
    series_csv_bytes,
)

EXACT = [
    (2.0, "2"),
    (-3.0, "-3"),
    (0.1, "0.1"),
    (76.72999999999999, "76.72999999999999"),
    (0.0, "0"),
    (-0.0, "0"),
    (math.nan, "NaN"),
    (math.inf, "Infinity"),
    (-math.inf, "-Infinity"),
    (1e-7, "1e-7"),
    (1e300, "1e+300"),
    (-1.5e-300, "-1.5e-300"),
    (5e-324, "5e-324"),
    (1.7976931348623157e308, "1.7976931348623157e+308"),
    (1e16, "1e+16"),
    (1.2345678901234568e17, "1.2345678901234568e+17"),
    (9999999999999998.0, "9999999999999998"),
    (1e15, "1000000000000000"),
    (2.0**53 + 2, "9007199254740994"),
    (0.0001, "0.0001"),
    (1e-5, "1e-5"),
    (1.5e-5, "1.5e-5"),
    (-1.2345e-5, "-1.2345e-5"),
    (9.9999e-5, "9.9999e-5"),
    (0.00012, "0.00012"),
    (123456.789, "123456.789"),
    (1 / 3, "0.3333333333333333"),
]


def _digits(text: str) -> str:
    """Significant digits of a number text."""
    mantissa = re.split("[eE]", text.lstrip("-"))[0].replace(".", "")
    return mantissa.strip("0") or "0"


@pytest.mark.parametrize(("value", "text"), EXACT)
def test_exact_forms(value: float, text: str) -> None:
    assert format_value(value) == text
    assert format_values(np.array([value])) == [text]


def test_exact_forms_in_one_block() -> None:
    values = np.array([v for v, _ in EXACT])
    assert format_values(values) == [t for _, t in EXACT]


def test_series_csv_bytes_layout() -> None:
    body = series_csv_bytes(np.array([2.0, 0.1, -0.0, math.nan, math.inf]))
    assert body == b"bin_index,value\n0,2\n1,0.1\n2,0\n3,NaN\n4,Infinity\n"
    assert series_csv_bytes(np.array([])) == CSV_HEADER == b"bin_index,value\n"
    assert series_csv_bytes([1.0]) == b"bin_index,value\n0,1\n"


def test_signalling_nan_and_odd_bits_without_warnings() -> None:
    snan = struct.unpack("<d", struct.pack("<Q", 0x7FF0000000000001))[0]
    neg_nan = struct.unpack("<d", struct.pack("<Q", 0xFFF8000000000000))[0]
    assert format_values(np.array([snan, neg_nan, -0.0])) == ["NaN", "NaN", "0"]


def test_random_bit_patterns_match_the_reference() -> None:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**64, size=50_000, dtype=np.uint64).view(np.float64)
    magnitudes = rng.standard_normal(50_000) * 10.0 ** rng.integers(-8, 19, 50_000)
    for values in (bits, magnitudes, np.round(magnitudes), np.round(magnitudes, 3)):
        assert format_values(values) == [format_value(v) for v in values.tolist()]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_round_trip_and_shortest(values: list[float]) -> None:
    texts = format_values(np.array(values))
    for value, text in zip(values, texts, strict=True):
        assert float(text) == value
        reference = repr(value)
        assert len(text) <= len(reference)
        assert _digits(text) == _digits(reference)  # as few significant digits as repr (shortest)
        assert text == format_value(value)
        assert text != "-0" and not text.endswith(".0")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(width=64), max_size=30))
def test_any_double_including_non_finite(values: list[float]) -> None:
    texts = format_values(np.array(values, dtype=np.float64))
    assert texts == [format_value(v) for v in values]
    for value, text in zip(values, texts, strict=True):
        back = float(text)
        assert (math.isnan(back) and math.isnan(value)) or back == value


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.lists(st.floats(width=64), max_size=25), max_size=8),
    st.integers(min_value=1, max_value=40),
)
def test_batch_bodies_equal_single_bodies(series: list[list[float]], block: int) -> None:
    arrays = [np.array(s, dtype=np.float64) for s in series]
    bodies = list(iter_csv_bodies(arrays, block_values=block))
    assert len(bodies) == len(arrays)
    for array, body in zip(arrays, bodies, strict=True):
        expected = CSV_HEADER + b"".join(f"{i},{format_value(v)}\n".encode() for i, v in enumerate(array))
        assert body.tobytes() == expected == series_csv_bytes(array)
        assert len(body) == len(expected)
        assert body.sha256() == "sha256:" + hashlib.sha256(expected).hexdigest()


def test_batch_of_a_matrix() -> None:
    matrix = np.arange(12, dtype=np.float64).reshape(3, 4) / 4
    bodies = [b.tobytes() for b in iter_csv_bodies(matrix)]
    assert bodies[1] == b"bin_index,value\n0,1\n1,1.25\n2,1.5\n3,1.75\n"
    assert bodies == [series_csv_bytes(row) for row in matrix]


def test_fast_path_is_active_and_the_fallback_agrees(monkeypatch: pytest.MonkeyPatch) -> None:
    assert number_format.fast_path_ok()
    rng = np.random.default_rng(3)
    series = [rng.standard_normal(n) * 10.0 ** rng.integers(-9, 18, n) for n in (0, 3, 50)]
    series.append(np.array([math.nan, -0.0, 2.0, 1.5e-5, -math.inf]))
    fast = [b.tobytes() for b in iter_csv_bodies(series, block_values=16)]
    monkeypatch.setattr(number_format, "fast_path_ok", lambda: False)
    assert [b.tobytes() for b in iter_csv_bodies(series)] == fast
