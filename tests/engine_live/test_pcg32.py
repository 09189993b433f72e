"""Tests for engine_live.model.pcg32: the SPEC test vector, jump-ahead equals the reference, pmf draws."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_live.model.pcg32 import Pcg32, pcg32_outputs, pmf_draws

SPEC_VECTOR = [1971522493, 242089394, 3457789919, 3637502659]


def reference(seed: int, start: int, count: int) -> list[int]:
    gen = Pcg32(seed)
    for _ in range(start):
        gen.next()
    return [gen.next() for _ in range(count)]


def reference_draws(values: list[float], probs: list[float], seed: int, start: int, count: int) -> list[float]:
    draws = []
    for out in reference(seed, start, count):
        u = out / 2**32
        c = 0.0
        chosen = values[-1]
        for v, prob in zip(values, probs, strict=True):
            c += prob
            if c >= u:
                chosen = v
                break
        draws.append(chosen)
    return draws


def test_spec_test_vector() -> None:
    gen = Pcg32(42)
    assert [gen.next() for _ in range(4)] == SPEC_VECTOR
    out = pcg32_outputs(42, 0, 4)
    assert out.dtype == np.uint32
    assert out.tolist() == SPEC_VECTOR
    assert pcg32_outputs(42, 1, 3).tolist() == SPEC_VECTOR[1:]
    assert pcg32_outputs(42, 3, 1).tolist() == SPEC_VECTOR[3:]


def test_seed_is_taken_modulo_2_64() -> None:
    assert pcg32_outputs(42 + 2**64, 0, 4).tolist() == SPEC_VECTOR
    assert pcg32_outputs(-1, 0, 5).tolist() == reference(2**64 - 1, 0, 5)


def test_empty_and_invalid() -> None:
    empty = pcg32_outputs(1, 10, 0)
    assert empty.dtype == np.uint32
    assert empty.shape == (0,)
    with pytest.raises(ValueError):
        pcg32_outputs(1, -1, 3)
    with pytest.raises(ValueError):
        pcg32_outputs(1, 0, -3)
    with pytest.raises(ValueError):
        pmf_draws([1.0], [0.5, 0.5], 0, 0, 1)
    with pytest.raises(ValueError):
        pmf_draws([], [], 0, 0, 1)


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(min_value=-(2**70), max_value=2**70),
    start=st.integers(min_value=0, max_value=1500),
    count=st.integers(min_value=0, max_value=600),
)
def test_vectorized_equals_reference(seed: int, start: int, count: int) -> None:
    assert pcg32_outputs(seed, start, count).tolist() == reference(seed, start, count)


def test_large_start_and_count() -> None:
    seed, start = 123456789, 100_000
    expected = reference(seed, start, 2_000)
    assert pcg32_outputs(seed, start, 2_000).tolist() == expected
    big = pcg32_outputs(seed, start - 50_000, 70_000)
    assert big[50_000:52_000].tolist() == expected
    assert big[:3].tolist() == reference(seed, start - 50_000, 3)


def test_million_outputs_are_consistent() -> None:
    out = pcg32_outputs(7, 0, 1_000_000)
    assert out.shape == (1_000_000,)
    assert out[-4:].tolist() == pcg32_outputs(7, 999_996, 4).tolist()
    assert out[:4].tolist() == reference(7, 0, 4)


def test_pmf_draws_known_values() -> None:
    # u = 0.459, 0.0564, 0.805, 0.847 against cumulative 0.7, 0.9, 1.0
    draws = pmf_draws([0, 1, 2], [0.7, 0.2, 0.1], 42, 0, 4)
    assert draws.dtype == np.float64
    assert draws.tolist() == [0.0, 0.0, 1.0, 1.0]


def test_pmf_draw_on_exact_cumulative_boundary_takes_that_value() -> None:
    u0 = SPEC_VECTOR[0] / 2**32  # exactly representable, so cumulative can equal u
    assert pmf_draws([1, 2], [u0, 1 - u0], 42, 0, 1).tolist() == [1.0]
    assert pmf_draws([1, 2], [u0 - 2**-32, 1 - u0], 42, 0, 1).tolist() == [2.0]
    assert reference_draws([1, 2], [u0, 1 - u0], 42, 0, 1) == [1]


def test_pmf_rounding_leaves_none_gives_last_value() -> None:
    assert pmf_draws([5, 6], [0.0, 0.0], 3, 0, 50).tolist() == [6.0] * 50
    assert pmf_draws([5, 6], [1.0, 0.0], 3, 0, 50).tolist() == [5.0] * 50


@settings(max_examples=100, deadline=None)
@given(
    probs=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=6),
    seed=st.integers(min_value=0, max_value=2**64 - 1),
    start=st.integers(min_value=0, max_value=300),
    count=st.integers(min_value=0, max_value=300),
)
def test_pmf_draws_equal_reference(probs: list[float], seed: int, start: int, count: int) -> None:
    values = [float(i * 10) for i in range(len(probs))]
    expected = reference_draws(values, probs, seed, start, count)
    assert pmf_draws(values, probs, seed, start, count).tolist() == expected
