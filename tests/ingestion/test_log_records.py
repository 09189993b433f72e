"""The log-record codec: every record round-trips, both frames formats decode to the same batch."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from engine_live.runtime.records import CloseRecord, CreateRecord, FramesRecord, PatchRecord
from engine_live.state.frame_batch import FrameBatch
from ingestion.log_records import decode, encode


def test_frames_of_both_formats_decode_to_the_same_batch() -> None:
    """Records are logged as columns (`cols`, the bin once when all frames share it); logs written
    before hold `frames` lists. Both decode to the same batch; malformed columns are refused."""
    one_bin = [(3, "arr", 1.5), (3, "Svc.errors", -0.0)]
    two_bins = [(3, "arr", 1.5), (7, "Svc.errors", 2.0), (3, "arr", 4.0)]
    for frames in (one_bin, two_bins, []):
        payload = encode(FramesRecord(FrameBatch.from_frames(frames)))
        fields = orjson.loads(payload)
        assert fields["t"] == "cols"
        assert isinstance(fields["b"], int) == (len({f[0] for f in frames}) == 1)
        old = orjson.dumps({"t": "frames", "f": [list(f) for f in frames]})
        got, want = decode(payload), decode(old)
        assert isinstance(got, FramesRecord) and isinstance(want, FramesRecord)
        for a, b in ((got.batch.bins, want.batch.bins), (got.batch.values, want.batch.values)):
            assert a.tobytes() == b.tobytes()
        assert list(got.batch.series) == list(want.batch.series) == [f[1] for f in frames]
        assert got.batch.frames() == frames
        assert np.signbit(got.batch.values).tolist() == [np.signbit(f[2]) for f in frames]  # -0.0 kept
    with pytest.raises(ValueError):
        decode(b'{"t": "cols", "b": [1, 2], "s": ["arr"], "v": [1.0]}')


def test_every_record_round_trips_with_its_wire_fields() -> None:
    create = CreateRecord("r1", "e1", "2025-01-01T00:00:00Z", "grid: {}", {"graceBins": 1})
    assert orjson.loads(encode(create)) == {
        "t": "create",
        "runId": "r1",
        "epoch": "e1",
        "createdUtc": "2025-01-01T00:00:00Z",
        "model": "grid: {}",
        "options": {"graceBins": 1},
    }
    assert decode(encode(create)) == create
    patch = PatchRecord({"modelRevision": 1, "fromBin": 4, "nodes": []})
    assert decode(encode(patch)) == patch
    assert encode(CloseRecord()) == b'{"t":"close"}' and decode(encode(CloseRecord())) == CloseRecord()
    sourced = decode(encode(FramesRecord(FrameBatch.from_frames([(0, "a", 1.0)]), (2, 17))))
    assert isinstance(sourced, FramesRecord) and sourced.source == (2, 17)


def test_garbage_is_refused() -> None:
    for payload in (b"not json", b"[1]", b'{"t": "nope"}'):
        with pytest.raises(ValueError):
            decode(payload)
