"""A class template in upstream's form (`corpus/ferry_classes_template.yaml`, written here in the
shape of upstream's `*-classes` templates) runs with its default parameters and produces per-class
series (SPEC §13, §14).

Hand-computed (bin 0): arrivals 30 Commuter + 10 Tourist + 20 Freight = 60; sailings 50 → queue 10,
split by the content available (0 + in_c) · 10 / 60: Commuter 5, Tourist 10/6, Freight 20/6. The
class routes send each class to its pier (city 30, island 10); the weight route takes the rest
(cargo 20, all Freight).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from compat_support import CORPUS

from compat_api.cli.main import main
from snapshot_writer.run_view import read_run_view

TEMPLATE = CORPUS / "ferry_classes_template.yaml"


def test_a_class_template_runs_with_its_defaults_and_writes_per_class_series(tmp_path: Path) -> None:
    assert main(["run", str(TEMPLATE), "--out", str(tmp_path / "run")]) == 0
    view = read_run_view(tmp_path / "run")
    series = view.series
    assert series["terminal_queue"].tolist() == [10, 10, 20, 20]
    np.testing.assert_allclose(series["terminal_queue@Commuter"][0], 5)
    np.testing.assert_allclose(series["terminal_queue@Tourist"][0], 10 / 6)
    np.testing.assert_allclose(series["terminal_queue@Freight"][0], 20 / 6)
    assert series["city_pier"].tolist() == [30] * 4 and series["city_pier@Commuter"].tolist() == [30] * 4
    assert series["island_pier@Tourist"].tolist() == [10, 20, 10, 20]
    assert series["cargo_dock"].tolist() == [20, 0, 20, 0] and series["cargo_dock@Freight"].tolist() == [20, 0, 20, 0]
    assert series["cargo_dock@Commuter"].tolist() == [0] * 4
    for sid in ("terminal_arrivals", "terminal_queue", "terminal_queue_outflow", "boarded", "dispatch"):
        parts = sum(series[f"{sid}@{c}"] for c in ("Commuter", "Tourist", "Freight"))
        np.testing.assert_allclose(parts, series[sid], rtol=1e-9, err_msg=sid)


def test_its_parameters_change_the_classes(tmp_path: Path) -> None:
    args = ["run", str(TEMPLATE), "--out", str(tmp_path / "run"), "--param", "bins=2"]
    args += ["--param", "tourists=[0, 40]", "--param", "commuters=[5, 5]", "--param", "freight=[0, 0]"]
    args += ["--param", "sailings=[50, 50]"]
    assert main(args) == 0
    series = read_run_view(tmp_path / "run").series
    assert series["island_pier@Tourist"].tolist() == [0, 40] and series["cargo_dock"].tolist() == [0, 0]
