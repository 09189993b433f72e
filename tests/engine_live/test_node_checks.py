"""Per-bin warning flags of a topology node (SPEC §3, §12.6)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine_live.derived.node_checks import CHECKS, node_flags, record_node_flags
from engine_live.derived.node_metrics import NodeInputs, derive
from engine_live.warnings.book import WarningBook

ALL_TELEMETRY = frozenset({"arrivals", "served", "queueDepth", "errors", "capacity"})


def arr(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def flags_of(node: NodeInputs, telemetry: frozenset[str] = ALL_TELEMETRY):
    return node_flags(node, derive(node, 5), telemetry)


def mask(flags, code: str) -> list[bool]:
    return flags[code][0].tolist()


def test_every_code_is_always_present_and_clean_node_flags_nothing() -> None:
    node = NodeInputs(
        "S",
        "service",
        {
            "arrivals": arr(10, 10, 10),
            "served": arr(10, 9, 10),
            "capacity": arr(20, 20, 20),
            "queueDepth": arr(0, 1, 1),
        },
    )
    f = flags_of(node)
    assert set(f) == set(CHECKS)
    assert set(CHECKS) == {
        "arrivals_negative",
        "served_negative",
        "queue_negative",
        "served_exceeds_arrivals",
        "served_exceeds_capacity",
        "conservation_violation",
        "backlog_growth_streak",
        "capacity_inferred_low",
        "data_gap",
    }
    for code, (m, v) in f.items():
        assert m.dtype == np.bool_ and m.shape == (3,) and v.shape == (3,), code
        assert not m.any(), code


@pytest.mark.parametrize(
    ("code", "field"),
    [("arrivals_negative", "arrivals"), ("served_negative", "served"), ("queue_negative", "queueDepth")],
)
def test_negative_values(code: str, field: str) -> None:
    node = NodeInputs("S", "service", {field: arr(1, -1, -1e-12, 0, -3)})
    f = flags_of(node)
    assert mask(f, code) == [False, True, False, False, True]  # -1e-12 is noise, not negative
    assert f[code][1][4] == -3
    assert CHECKS[code].worst == "min"


def test_served_exceeds_arrivals_only_for_non_queue_kinds() -> None:
    metrics = {"arrivals": arr(10, 10, 10), "served": arr(10, 10.0000005, 11)}
    f = flags_of(NodeInputs("S", "service", metrics))
    assert mask(f, "served_exceeds_arrivals") == [False, False, True]
    assert f["served_exceeds_arrivals"][1][2] == pytest.approx(1.0)
    for kind in ("serviceWithBuffer", "queue", "dlq"):
        assert not any(mask(flags_of(NodeInputs("Q", kind, metrics)), "served_exceeds_arrivals"))


def test_served_exceeds_capacity_times_parallelism_with_tolerance() -> None:
    metrics = {"served": arr(10, 10 + 5e-7, 10.1, 11), "capacity": arr(5, 5, 5, 20)}
    f = flags_of(NodeInputs("S", "service", metrics, parallelism=2.0))
    assert mask(f, "served_exceeds_capacity") == [False, False, True, False]
    assert f["served_exceeds_capacity"][1][2] == pytest.approx(0.1)
    # an inferred capacity is never checked
    f = flags_of(NodeInputs("S", "service", {"served": arr(10, 20, 30)}))
    assert not any(mask(f, "served_exceeds_capacity"))


def test_conservation_violation_uses_previous_bin_from_lookback() -> None:
    metrics = {"arrivals": arr(0, 10, 10, 10), "served": arr(0, 5, 10, 20), "queueDepth": arr(0, 5, 5, 0)}
    # residuals: bin1 10-5-(5-0)=0, bin2 10-10-0=0, bin3 10-20-(0-5)=-5
    f = flags_of(NodeInputs("S", "serviceWithBuffer", metrics, lookback=1))
    assert mask(f, "conservation_violation") == [False, False, True]
    assert f["conservation_violation"][1][2] == pytest.approx(-5.0)
    assert CHECKS["conservation_violation"].worst == "absmax"


def test_conservation_tolerance_and_telemetry_requirement() -> None:
    metrics = {"arrivals": arr(0, 10, 10), "served": arr(0, 10, 10), "queueDepth": arr(0, 0.009, 0.03)}
    f = flags_of(NodeInputs("S", "serviceWithBuffer", metrics))
    assert mask(f, "conservation_violation") == [False, False, True]  # |−0.009| ≤ 0.01 < |−0.021|
    partial = frozenset({"arrivals", "served"})  # queueDepth is computed by the model
    assert not any(mask(flags_of(NodeInputs("S", "serviceWithBuffer", metrics), partial), "conservation_violation"))


def test_conservation_first_input_bin_has_no_previous() -> None:
    metrics = {"arrivals": arr(0, 0), "served": arr(0, 0), "queueDepth": arr(5, 5)}
    assert mask(flags_of(NodeInputs("S", "serviceWithBuffer", metrics)), "conservation_violation") == [False, False]


def test_backlog_growth_streak_flags_bins_completing_three_rises() -> None:
    queue = arr(0, 1, 2, 3, 4, 4, 5, 6, 7)
    # rises at bins 1,2,3,4 and 6,7,8 → bins 3,4 and 8 complete a run of >= 3
    f = flags_of(NodeInputs("Q", "queue", {"queueDepth": queue}))
    assert np.flatnonzero(f["backlog_growth_streak"][0]).tolist() == [3, 4, 8]
    assert f["backlog_growth_streak"][1][8] == 7.0
    # the same with 3 history bins: the streak is found across the lookback boundary
    f = flags_of(NodeInputs("Q", "queue", {"queueDepth": queue}, lookback=3))
    assert mask(f, "backlog_growth_streak") == [True, True, False, False, False, True]
    no_streak = flags_of(NodeInputs("Q", "queue", {"queueDepth": arr(0, 1, 2, 2, 3, 4, 4)}))
    assert not any(mask(no_streak, "backlog_growth_streak"))


def test_capacity_inferred_low_three_bins_in_a_row() -> None:
    metrics = {"served": arr(5, 5, 5, 5, 5), "queueDepth": arr(0, 0, 0, 0, 0)}
    f = flags_of(NodeInputs("S", "service", metrics))
    assert mask(f, "capacity_inferred_low") == [False, False, True, True, True]
    assert CHECKS["capacity_inferred_low"].severity == "info"
    f = flags_of(NodeInputs("S", "service", metrics, lookback=2))
    assert mask(f, "capacity_inferred_low") == [True, True, True]
    # a saturated bin (high confidence) every third bin breaks the run
    broken = {"served": arr(5, 5, 5, 5, 5, 5), "queueDepth": arr(0, 0, 1, 0, 0, 1)}
    assert not any(mask(flags_of(NodeInputs("S", "service", broken)), "capacity_inferred_low"))
    with_capacity = dict(metrics, capacity=arr(9, 9, 9, 9, 9))
    assert not any(mask(flags_of(NodeInputs("S", "service", with_capacity)), "capacity_inferred_low"))


def test_data_gap_flags_and_suppresses_placeholder_checks() -> None:
    metrics = {"arrivals": arr(10, 0, 10, 10), "served": arr(10, -1, 10, 10), "queueDepth": arr(5, 0, 5, 5)}
    gap = np.array([False, True, False, False])
    f = flags_of(NodeInputs("S", "serviceWithBuffer", metrics, gap=gap))
    assert mask(f, "data_gap") == [False, True, False, False]
    assert math.isnan(f["data_gap"][1][1])
    assert not any(mask(f, "served_negative"))  # the gap bin holds placeholders
    assert not any(mask(f, "conservation_violation"))  # nor is the bin after it judged by them
    f = flags_of(NodeInputs("S", "serviceWithBuffer", metrics))
    assert mask(f, "served_negative") == [False, True, False, False]
    assert mask(f, "conservation_violation") == [False, True, True, False]


def test_record_node_flags_feeds_the_book() -> None:
    book = WarningBook()
    node = NodeInputs("Pay", "service", {"served": arr(30, 11, 12, 10), "capacity": arr(50, 10, 10, 10)}, lookback=1)
    record_node_flags(book, "Pay", 100, flags_of(node))
    changes = book.take_changes()
    assert [(c.op, c.warning["code"]) for c in changes] == [("add", "served_exceeds_capacity")]
    w = changes[0].warning
    assert w["bins"] == [100, 101] and w["count"] == 2 and w["value"] == 2.0
    assert w["severity"] == "warning" and w["nodeId"] == "Pay" and "seriesId" not in w
    assert w["message"] == ("Pay: served exceeds capacity × parallelism in 2 bin(s) (100, 101); largest excess 2")
    # re-evaluated after a correction: nothing exceeds any more → clear
    fixed = NodeInputs("Pay", "service", {"served": arr(30, 10, 10, 10), "capacity": arr(50, 10, 10, 10)}, lookback=1)
    record_node_flags(book, "Pay", 100, flags_of(fixed))
    assert [(c.op, c.warning["code"]) for c in book.take_changes()] == [("clear", "served_exceeds_capacity")]
    assert book.active() == []


def test_derived_length_must_match() -> None:
    node = NodeInputs("S", "service", {"served": arr(1, 2, 3)}, lookback=1)
    with pytest.raises(ValueError, match="derived has"):
        node_flags(node, derive(NodeInputs("S", "service", {"served": arr(1, 2, 3)}), 1), ALL_TELEMETRY)
