"""A model without classes writes byte-identical artifacts to those written before classes existed
(issue 14): the sha256 below were computed with the tree of commit b08e4d9~1 (the last one without
the class engine) by the same procedure. Parquet files are left out (their bytes carry the pyarrow
version; `tests/snapshot_writer` compares their contents)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from engine_live.plan.batch_run import run_model
from snapshot_writer.artifacts import write_run_artifacts

ROOT = Path(__file__).resolve().parents[2]
BEFORE_CLASSES = {
    "tests/compat/corpus/retry_service_time/model.yaml": (
        "3d764fefc8ba4ecdb6355c80d37d1a79ebf1353376d916ce95a3beac53c13c2c"
    ),
    "compat_api/examples/order_system.yaml": "3a58f750203cf3c81a95dd471791a644b50aa836b86364ea2af9e34672713c3b",
}


@pytest.mark.parametrize("model", sorted(BEFORE_CLASSES))
def test_class_less_artifacts_are_byte_identical_to_before_classes(model: str, tmp_path: Path) -> None:
    path = ROOT / model
    run = run_model(path.read_text(), base_dir=path.parent, created_utc="2025-10-08T12:00:00Z", run_id="run_hash")
    write_run_artifacts(run.result, tmp_path, fsync=False)
    digest = hashlib.sha256()
    for f in sorted(x for x in tmp_path.rglob("*") if x.is_file() and x.suffix != ".parquet"):
        digest.update(str(f.relative_to(tmp_path)).encode())
        digest.update(f.read_bytes())
    assert digest.hexdigest() == BEFORE_CLASSES[model]
