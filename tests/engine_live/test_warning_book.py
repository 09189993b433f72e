"""WarningBook: aggregation, add/clear diffs, ordering and state round-trip (SPEC §12.6)."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine_live.warnings import entry as warning_entry
from engine_live.warnings.book import Aggregate, WarningBook

K = ("served_negative", "A", None)


def flag(book: WarningBook, key, bins, mask, values, **kw) -> None:
    book.set_flags(key, np.array(bins), np.array(mask, dtype=bool), np.array(values, dtype=float), **kw)


def ops(book: WarningBook) -> list[tuple[str, str, str | None, int]]:
    return [(c.op, c.warning["code"], c.warning["nodeId"], c.warning["count"]) for c in book.take_changes()]


def test_add_aggregates_bins_count_worst_and_message() -> None:
    book = WarningBook()
    flag(
        book,
        K,
        [0, 1, 2, 3, 4],
        [False, True, False, True, False],
        [0, -2, 0, -7, 0],
        severity="warning",
        worst="min",
        message_fn=lambda a: f"{a.count} bad, worst {a.value}",
    )
    changes = book.take_changes()
    assert len(changes) == 1 and changes[0].op == "add"
    assert changes[0].warning == {
        "code": "served_negative",
        "severity": "warning",
        "nodeId": "A",
        "bins": [1, 3],
        "count": 2,
        "value": -7.0,
        "message": "2 bad, worst -7.0",
    }
    assert book.take_changes() == []


def test_unchanged_reevaluation_sends_nothing() -> None:
    book = WarningBook()
    flag(book, K, [5], [True], [1.0], message="m")
    book.take_changes()
    flag(book, K, [5], [True], [1.0], message="m")
    flag(book, ("x", "B", None), [5], [False], [0.0], message="m")  # never flagged: no key, no event
    assert book.take_changes() == []
    assert len(book) == 1


def test_first_five_bins_ascending_and_count() -> None:
    book = WarningBook()
    for b in [9, 3, 7, 1, 5, 2, 8]:  # out of order, one bin per call
        flag(book, K, [b], [True], [float(b)])
    (w,) = book.active()
    assert w["bins"] == [1, 2, 3, 5, 7] and w["count"] == 7 and w["value"] == 9.0
    assert book.flagged_bins(K) == [1, 2, 3, 5, 7, 8, 9]


def test_change_of_aggregate_sends_add_again() -> None:
    book = WarningBook()
    flag(book, K, [0, 1], [True, True], [1.0, 2.0])
    assert ops(book) == [("add", "served_negative", "A", 2)]
    flag(book, K, [1], [True], [5.0])  # value of a flagged bin corrected
    changes = book.take_changes()
    assert [c.op for c in changes] == ["add"] and changes[0].warning["value"] == 5.0
    flag(book, K, [2], [True], [0.5])  # one more bin
    assert ops(book) == [("add", "served_negative", "A", 3)]


def test_correction_removes_bins_and_clears_last() -> None:
    book = WarningBook()
    flag(book, K, [10, 11, 12], [True, True, True], [3, 9, 4])
    book.take_changes()
    flag(book, K, [11], [False], [0])  # the worst bin goes: worst recomputed
    changes = book.take_changes()
    assert changes[0].op == "add"
    assert changes[0].warning["bins"] == [10, 12] and changes[0].warning["value"] == 4.0
    flag(book, K, [10, 11, 12], [False, False, False], [0, 0, 0])
    changes = book.take_changes()
    assert [c.op for c in changes] == ["clear"]
    assert changes[0].warning["code"] == "served_negative" and changes[0].warning["bins"] == [10, 12]
    assert book.active() == [] and len(book) == 0
    flag(book, K, [10], [False], [0])  # clearing again is a no-op
    assert book.take_changes() == []


def test_appear_and_vanish_between_takes_is_silent() -> None:
    book = WarningBook()
    flag(book, K, [1], [True], [1.0])
    flag(book, K, [1], [False], [0.0])
    assert book.take_changes() == []


def test_bins_outside_the_given_range_are_kept() -> None:
    book = WarningBook()
    flag(book, K, [0, 1, 2], [True, True, True], [1, 1, 1])
    flag(book, K, [2, 3], [False, True], [0, 1])
    assert book.flagged_bins(K) == [0, 1, 3]
    # a large unflagged range goes through the bulk path
    flag(book, K, np.arange(1, 500), np.zeros(499, dtype=bool), np.zeros(499))
    assert book.flagged_bins(K) == [0]


def test_changes_sorted_by_code_then_node_and_series_id_only_when_set() -> None:
    book = WarningBook()
    for key in [("z_code", "A", None), ("a_code", "B", None), ("a_code", "A", "s@S@DEFAULT"), ("m_code", "C", None)]:
        flag(book, key, [0], [True], [1.0])
    changes = book.take_changes()
    assert [(c.warning["code"], c.warning["nodeId"]) for c in changes] == [
        ("a_code", "A"),
        ("a_code", "B"),
        ("m_code", "C"),
        ("z_code", "A"),
    ]
    assert changes[0].warning["seriesId"] == "s@S@DEFAULT" and "seriesId" not in changes[1].warning
    assert [(w["code"], w["nodeId"]) for w in book.active()] == [
        ("a_code", "A"),
        ("a_code", "B"),
        ("m_code", "C"),
        ("z_code", "A"),
    ]


def test_worst_rules() -> None:
    book = WarningBook()
    flag(book, ("mx", "N", None), [0, 1, 2], [True] * 3, [1, 7, -9], worst="max")
    flag(book, ("mn", "N", None), [0, 1, 2], [True] * 3, [1, 7, -9], worst="min")
    flag(book, ("ab", "N", None), [0, 1, 2], [True] * 3, [1, 7, -9], worst="absmax")
    flag(book, ("tie", "N", None), [0, 1], [True] * 2, [-5, 5], worst="absmax")
    flag(book, ("nan", "N", None), [0, 1], [True] * 2, [math.nan, math.nan])
    flag(book, ("rnd", "N", None), [0], [True], [0.1234565])
    values = {w["code"]: w["value"] for w in book.active()}
    assert values == {"mx": 7.0, "mn": -9.0, "ab": -9.0, "tie": 5.0, "nan": None, "rnd": 0.123457}


def test_result_independent_of_call_order() -> None:
    rng = np.random.default_rng(3)
    bins = np.arange(40)
    mask = rng.random(40) < 0.5
    values = rng.normal(0, 10, 40)
    one = WarningBook()
    flag(one, K, bins, mask, values, worst="absmax")
    other = WarningBook()
    for i in rng.permutation(40):
        flag(other, K, [bins[i]], [True], [99.0], worst="absmax")  # wrong first, then corrected
    for i in rng.permutation(40):
        flag(other, K, [bins[i]], [mask[i]], [values[i]], worst="absmax")
    assert one.active() == other.active()


def test_message_function_sees_the_aggregate() -> None:
    seen: list[Aggregate] = []

    def msg(a: Aggregate) -> str:
        seen.append(a)
        return "x"

    book = WarningBook()
    flag(book, ("c", "N", "s"), [4, 2], [True, True], [1.0, 3.0], message_fn=msg)
    book.active()
    assert seen[-1] == Aggregate("c", "N", "s", (2, 4), 2, 3.0)


def test_state_round_trip_is_exact() -> None:
    book = WarningBook()
    flag(book, ("a", "N", None), [0, 1, 2, 3, 4, 5], [True] * 6, [1, 2, 3, math.inf, 0, -1], message="m")
    flag(book, ("b", "N", "s"), [3], [True], [math.nan], severity="info", worst="min", message="n")
    book.take_changes()
    flag(book, ("a", "N", None), [0], [False], [0], message="m")  # pending change, not yet taken
    flag(book, ("c", "M", None), [7], [True], [-math.inf], message="o")
    state = json.loads(json.dumps(book.to_state(), allow_nan=False))  # plain JSON, no NaN tokens
    restored = WarningBook.from_state(state)
    assert restored.to_state() == state
    assert restored.active() == book.active()
    assert restored.take_changes() == book.take_changes()
    flag(book, ("a", "N", None), [3], [False], [0], message="m")
    flag(restored, ("a", "N", None), [3], [False], [0], message="m")
    assert restored.take_changes() == book.take_changes()
    assert restored.active() == book.active()


def test_single_bin_calls_stay_cheap_on_a_long_run() -> None:
    book = WarningBook()
    key = ("capacity_inferred_low", "N", None)
    start = time.perf_counter()
    for b in range(20000):  # every bin flagged, one call and one take per bin
        flag(book, key, [b], [True], [float(b % 7)])
        book.take_changes()
    elapsed = time.perf_counter() - start
    assert book.active()[0]["count"] == 20000
    assert elapsed < 5.0


def test_count_only_growth_is_not_resent() -> None:
    """A persistent warning flags every new bin: re-sending it for each would flood the stream."""
    book = WarningBook()
    flag(book, K, [0, 1, 2, 3, 4], [True] * 5, [-1.0] * 5, worst="min")
    assert ops(book) == [("add", "served_negative", "A", 5)]
    flag(book, K, [5, 6], [True, True], [-1.0, -1.0], worst="min")  # first five bins and worst value unchanged
    assert book.take_changes() == []
    assert book.active()[0]["count"] == 7  # the current count is in state and snapshots
    flag(book, K, [7], [True], [-3.0], worst="min")  # a worse value is news
    assert ops(book) == [("add", "served_negative", "A", 8)]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.integers(0, 12),
            st.booleans(),
            st.sampled_from([1.0, -2.0, 3.5, float("nan"), float("inf")]),
            st.sampled_from(["max", "min", "absmax"]),
        ),
        max_size=60,
    ),
    st.integers(1, 7),
)
def test_set_flag_equals_set_flags_of_one_bin(ops: list[tuple[str, int, bool, float, Any]], every: int) -> None:
    one, many = WarningBook(), WarningBook()
    for i, (node, b, flagged, value, worst) in enumerate(ops):
        key = ("c", node, None)
        one.set_flag(key, b, flagged, value, worst=worst, message_fn=lambda a: f"{a.count} {a.value}")
        many.set_flags(key, [b], [flagged], [value], worst=worst, message_fn=lambda a: f"{a.count} {a.value}")
        if i % every == 0:
            assert [(c.op, repr(c.warning)) for c in one.take_changes()] == [
                (c.op, repr(c.warning)) for c in many.take_changes()
            ]
    assert repr(one.to_state()) == repr(many.to_state()) and repr(one.active()) == repr(many.active())


def reload_packed(book: WarningBook) -> WarningBook:
    """A copy whose entries are packed arrays, as a snapshot restore loads them."""
    out = WarningBook()
    for key in book:
        bins, vals = book.entry_cells(key)
        e = book._entries[key]
        out.load_entry(
            key,
            np.array(bins, dtype=np.int64),
            np.array(vals),
            e.worst_now(),
            severity=e.severity,
            worst=e.worst,
            message_fn=e.message_fn,
            message=e.message,
        )
    for key, w in book.published_view().items():
        out.load_published(key, w)
    for key in book.dirty_keys():
        out.mark_dirty(key)
    return out


OPS = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c"]),
        st.integers(0, 12),
        st.booleans(),
        st.sampled_from([1.0, -2.0, 3.5, 0.0, float("nan"), float("inf")]),
    ),
    max_size=40,
)


@settings(max_examples=80, deadline=None)
@given(OPS, OPS, st.sampled_from(["max", "min", "absmax"]), st.booleans())
def test_packed_entries_behave_like_built_ones(before: list[Any], after: list[Any], worst: Any, batch: bool) -> None:
    def msg(a: Aggregate) -> str:
        return f"{a.count} {a.bins} {a.value}"

    built = WarningBook()
    for node, b, flagged, value in before:
        built.set_flag(("c", node, None), b, flagged, value, worst=worst, message_fn=msg)
    built.take_changes()
    packed = reload_packed(built)
    for i, (node, b, flagged, value) in enumerate(after):
        for book in (built, packed):
            if batch and i % 2:
                book.set_flags(
                    ("c", node, None), [b, b + 1], [flagged, not flagged], [value, 1.0], worst=worst, message_fn=msg
                )
            else:
                book.set_flag(("c", node, None), b + 20 * (i % 3 == 0), flagged, value, worst=worst, message_fn=msg)
        assert repr(packed.take_changes()) == repr(built.take_changes())
    assert repr(packed.active()) == repr(built.active())
    cells = [repr([b.entry_cells(k) for k in sorted(b.keys())]) for b in (packed, built)]
    assert cells[0] == cells[1]
    assert repr(packed.to_state()) == repr(built.to_state())


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "c"]), unique=True),
            st.sampled_from([1.0, -2.0, 3.5, 0.5, float("nan"), float("inf"), -7.0]),
            st.booleans(),
            st.integers(0, 3),
        ),
        max_size=40,
    ),
    st.sampled_from(["max", "min", "absmax"]),
    st.booleans(),
)
def test_append_flags_equals_set_flag(steps: list[Any], worst: Any, packed_start: bool) -> None:
    """`append_flags` (a newly published bin) gives the changes and state `set_flag` gives."""

    def msg(a: Aggregate) -> str:
        return f"{a.count} {a.bins} {a.value}"

    spec = ("warning", worst, msg, None)
    fast, slow = WarningBook(), WarningBook()
    for b, (nodes, value, clear_one, back) in enumerate(steps):
        keys = [("c", n, None) for n in nodes]
        fast.append_flags(b, keys, [value + i for i in range(len(keys))], [spec] * len(keys))
        for i, k in enumerate(keys):
            slow.set_flag(k, b, True, value + i, worst=worst, message_fn=msg)
        if clear_one and b >= back:  # a correction unflags an older bin
            for book in (fast, slow):
                book.set_flag(("c", "a", None), b - back, False, 0.0, worst=worst, message_fn=msg)
        assert repr(fast.take_changes()) == repr(slow.take_changes())
        if packed_start and b == 5:
            fast, slow = reload_packed(fast), reload_packed(slow)
    assert repr(fast.to_state()) == repr(slow.to_state()) and repr(fast.active()) == repr(slow.active())


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True),
            st.lists(st.sampled_from([1.0, -2.0, 3.5, 0.5, float("nan"), -7.0, 9.0]), min_size=4, max_size=4),
        ),
        min_size=1,
        max_size=30,
    ),
    st.sampled_from(["max", "min", "absmax"]),
    st.booleans(),
)
def test_append_block_equals_bin_by_bin(steps: list[Any], worst: Any, stale_first: bool) -> None:
    """`append_block` (a quiet replay's bins at once) counts the changes and leaves the book and its
    published warnings as `append_flags` + `take_changes` bin by bin do."""

    def msg(a: Aggregate) -> str:
        return f"{a.count} {a.bins} {a.value}"

    spec = ("warning", worst, msg, None)
    books = [WarningBook(), WarningBook()]
    for book in books:  # a common start: a few bins, maybe a stale worst value
        for b in range(3):
            book.append_flags(b, [("c", "a", None)], [float(b)], [spec])
            book.take_changes()
        if stale_first:
            book.set_flag(("c", "a", None), 2, False, 0.0, worst=worst, message_fn=msg)
            book.take_changes()
    by_bin, block = books
    first = 10
    counted = 0
    for t, (nodes, vals) in enumerate(steps):
        keys = [("c", n, None) for n in nodes]
        by_bin.append_flags(first + t, keys, vals[: len(keys)], [spec] * len(keys))
        counted += len(by_bin.take_changes())
    cells: dict[Any, tuple[list[int], list[float]]] = {}
    for t, (nodes, vals) in enumerate(steps):
        for n, v in zip(nodes, vals, strict=False):
            cells.setdefault(("c", n, None), ([], []))
            cells[("c", n, None)][0].append(first + t)
            cells[("c", n, None)][1].append(v)
    keys = sorted(cells)
    got = block.append_block(keys, [cells[k][0] for k in keys], [cells[k][1] for k in keys], [spec] * len(keys))
    assert got == counted
    assert repr(sorted(block.published_view().items())) == repr(sorted(by_bin.published_view().items()))
    assert repr(block.active()) == repr(by_bin.active()) and repr(block.to_state()) == repr(by_bin.to_state())
    assert block.dirty_keys() == ()


@pytest.fixture
def tiny_packs() -> Iterator[None]:
    """Pack appended flags after 2 of them (not 512): the packed paths run in small tests."""
    with mock.patch.object(warning_entry, "PACK_MIN", 2):
        yield


def test_append_paths_with_packing_equal_the_unpacked_book(tiny_packs: None) -> None:
    test_append_flags_equals_set_flag.hypothesis.inner_test(  # type: ignore[attr-defined]
        [(["a", "b"], 1.0 + i % 3, i % 4 == 0, i % 3) for i in range(40)], "max", True
    )
    for worst in ("max", "min", "absmax"):
        steps = [(["a", "b", "c"][: 1 + i % 3], [float((i * 7) % 5) - 2, 9.0, -1.0, float(i)]) for i in range(60)]
        for stale_first in (False, True):
            test_append_block_equals_bin_by_bin.hypothesis.inner_test(steps, worst, stale_first)  # type: ignore[attr-defined]
