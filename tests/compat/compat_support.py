"""Helpers of the FlowTime-dialect tests (SPEC §13): the corpus folder, an HTTP client, model runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.settings import Settings
from engine_live.model.build import load_graph
from engine_live.model.series_defs import ModelGraph
from engine_live.plan.compiler import compile_model
from engine_live.plan.evaluator import evaluate_batch

CORPUS = Path(__file__).parent / "corpus"


@contextmanager
def make_client(data_dir: Path) -> Iterator[TestClient]:
    """A client of the whole app on `data_dir` (no auth, no fsync)."""
    with TestClient(create_app(Settings(data_dir=data_dir, fsync=False, port=0))) as client:
        yield client


def evaluate(source: str | dict[str, Any], base_dir: Path | None = None) -> tuple[ModelGraph, dict[str, list[float]]]:
    """The graph and every series of a model evaluated over its whole grid."""
    graph = load_graph(source, base_dir=base_dir)
    plan = compile_model(graph)
    V = evaluate_batch(plan)
    return graph, {name: [float(v) for v in V[row]] for name, row in plan.row.items()}


def close(actual: list[float], expected: list[float]) -> None:
    """Equal within 1e-12 (relative), bin by bin."""
    assert np.allclose(actual, expected, rtol=1e-12, atol=1e-12), (actual, expected)


def codes(graph: ModelGraph) -> list[str]:
    """The warning codes of a graph, in order."""
    return [w["code"] for w in graph.info]


def model(nodes: list[dict[str, Any]], bins: int = 3, **extra: Any) -> dict[str, Any]:
    """A model of `bins` 5-minute bins with these nodes."""
    return {"schemaVersion": 1, "grid": {"bins": bins, "binSize": 5, "binUnit": "minutes"}, "nodes": nodes, **extra}


def write_csv(path: Path, values: list[float]) -> None:
    """A `bin_index,value` CSV."""
    path.write_text("bin_index,value\n" + "".join(f"{i},{v}\n" for i, v in enumerate(values)), encoding="utf-8")


__all__ = ["CORPUS", "close", "codes", "evaluate", "make_client", "model", "write_csv"]
