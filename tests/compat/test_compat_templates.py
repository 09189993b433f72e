"""Templates as upstream writes them (SPEC §13): any template file renders — from the CLI with `--param`,
as `model` text of `POST /v1/runs`, and from `<dataDir>/templates/` through `/v1/templates`.

Corpus template `checkout_template.yaml` (4 bins of 15 minutes): demand = ${demand} (default 10 20 30 40),
served = demand · ${rate} (default 0.5) = 5 10 15 20, waiting = demand − served = 5 10 15 20."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from compat_support import CORPUS, close, make_client, write_csv

from compat_api.cli.main import main
from compat_api.templates.catalog import render_model
from compat_api.templates.render import parse_template, render
from engine_live.errors import InvalidRequestError, TemplateParameterError, TooLargeError
from engine_live.model.build import load_graph
from engine_live.model.text import parse_model_text
from engine_live.plan.batch_run import run_model

TEMPLATE = CORPUS / "checkout_template.yaml"
TEXT = TEMPLATE.read_text(encoding="utf-8")


def rendered(params: dict[str, Any], base_dir: Path | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    text, _, warnings = render(parse_template(TEXT), params, data_dir=Path("/nonexistent"), base_dir=base_dir)
    return parse_model_text(text), warnings


def series_of(text_or_data: Any, base_dir: Path | None = None) -> dict[str, list[float]]:
    run = run_model(text_or_data, base_dir=base_dir)
    return {s.node_id: [float(v) for v in s.values] for s in run.result.series}


def error_body(params: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(TemplateParameterError) as info:
        rendered(params)
    assert info.value.http_status == 400
    return info.value.to_body()


# -- rendering -------------------------------------------------------------------------------------


def test_an_upstream_template_renders_with_its_defaults() -> None:
    data, _ = rendered({})
    assert not {"metadata", "parameters", "generator"} & set(data)
    assert data["grid"] == {"bins": 4, "binSize": 15, "binUnit": "minutes"}
    assert data["window"] == {"start": "2025-01-01T00:00:00Z", "timezone": "UTC"}
    assert "source" not in data["nodes"][0]  # ${demandSource} is "": the field is absent
    graph = load_graph(data)
    assert graph.grid.start == "2025-01-01T00:00:00Z"  # window.start feeds the grid
    assert graph.topo[0].aliases == {"served": "Orders (day shift)"}
    assert sorted({w["code"] for w in graph.info}) == ["legacy_field"]  # expression, dependencies, outputs
    out = series_of(data)
    close(out["served"], [5, 10, 15, 20])
    assert "waiting" not in out  # outputs: served as served.csv, then "*" without waiting
    assert sorted(out) == ["demand", "served"]


def test_parameter_values_and_a_file_source(tmp_path: Path) -> None:
    write_csv(tmp_path / "observed.csv", [2, 4, 6, 8])
    data, _ = rendered({"rate": 0.25, "demandSource": "file://observed.csv", "shift": "night"}, tmp_path)
    close(series_of(data, tmp_path)["served"], [0.5, 1, 1.5, 2])
    assert load_graph(data, base_dir=tmp_path).topo[0].aliases == {"served": "Orders (night shift)"}


def test_an_array_feeding_a_const_must_have_grid_bins_items() -> None:
    assert error_body({"demand": [1, 2, 3]}) == {
        "error": "parameter_length_mismatch",
        "message": "parameter 'demand' provides 3 values but grid.bins is 4; "
        "const node 'demand' requires matching length",
        "parameter": "demand",
        "expected": 4,
        "actual": 3,
        "nodeId": "demand",
    }
    data, _ = rendered({"bins": 3, "demand": [1, 2, 3]})  # both lengths agree
    close(series_of(data)["served"], [0.5, 1, 1.5])


@pytest.mark.parametrize(
    ("params", "error", "parameter"),
    [
        ({"bins": 9}, "out_of_range", "bins"),  # maximum: 8
        ({"rate": -1}, "out_of_range", "rate"),  # min: 0
        ({"shift": "evening"}, "out_of_range", "shift"),  # enum
        ({"demand": [1, 2, 3.5, 4]}, "parameter_type_mismatch", "demand"),  # arrayOf: int
        ({"demand": [1, 2, 3, 1001]}, "out_of_range", "demand"),  # maximum bounds every item
        ({"colour": "red"}, "unknown_parameter", "colour"),
    ],
)
def test_upstream_parameter_fields_are_enforced(params: dict[str, Any], error: str, parameter: str) -> None:
    body = error_body(params)
    assert (body["error"], body["parameter"]) == (error, parameter)


def test_authoring_mistakes_are_named() -> None:
    with pytest.raises(ValueError, match=r"placeholders without a parameter: \['missing'\]"):
        parse_template(TEXT.replace("${rate}", "${missing}"))
    with pytest.raises(ValueError, match="give min or minimum, not both"):
        parse_template(TEXT.replace("    min: 0\n", "    min: 0\n    minimum: 1\n"))
    with pytest.raises(ValueError, match="default: parameter 'rate': 2 is out of range"):
        parse_template(TEXT.replace("default: 0.5", "default: 2"))
    parse_template("# ${commented} placeholders are not data\n" + TEXT)  # fine


# -- command line ----------------------------------------------------------------------------------


def test_flowtime_run_and_validate_render_a_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(TEMPLATE, tmp_path / "t.yaml")
    write_csv(tmp_path / "seen.csv", [4, 8])
    args = ["--param", "bins=2", "--param", "demand=3,5", "--param", "rate=0.5"]
    assert main(["run", str(tmp_path / "t.yaml"), *args, "--out", str(tmp_path / "r1")]) == 0
    assert (tmp_path / "r1" / "series" / "served.csv").read_text().splitlines()[1:] == ["0,1.5", "1,2.5"]
    args = ["--param", "bins=2", "--param", "demand=[1, 1]", "--param", "demandSource=file:seen.csv"]
    assert main(["run", str(tmp_path / "t.yaml"), *args, "--out", str(tmp_path / "r2")]) == 0
    assert (tmp_path / "r2" / "series" / "served.csv").read_text().splitlines()[1:] == ["0,2", "1,4"]
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "t.yaml")]) == 0
    assert "valid: " in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "t.yaml"), "--param", "shift=evening"]) == 2
    assert "error: parameter 'shift': 'evening' is not one of ['day', 'night']" in capsys.readouterr().err
    assert main(["validate", str(tmp_path / "t.yaml"), "--param", "nope=1"]) == 2
    assert "has no parameter 'nope'" in capsys.readouterr().err


def test_param_on_a_plain_model_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "m.yaml"
    path.write_text("grid: {bins: 1, binSize: 1, binUnit: hours}\nnodes: [{id: a, kind: const, values: [1]}]\n")
    assert main(["validate", str(path), "--param", "bins=2"]) == 2
    assert "m.yaml declares no parameters: --param applies to templates" in capsys.readouterr().err


def test_a_report_of_several_errors_lists_every_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "grid: {bins: 1, binSize: 1, binUnit: hours}\nnodes:\n  - {id: a, kind: const}\n  - {id: b, kind: expr}\n"
    )
    assert main(["validate", str(path)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: 2 errors:",
        "  - node 'a': exactly one of values or source is required",
        "  - node 'b': expr: required (a string)",
    ]


# -- HTTP ------------------------------------------------------------------------------------------


def test_post_runs_renders_template_text(tmp_path: Path) -> None:
    with make_client(tmp_path) as client:
        r = client.post("/v1/runs", json={"mode": "simulation", "model": TEXT, "parameters": {"rate": 0.25}})
        assert r.status_code == 201, r.text
        run_id = r.json()["runId"]
        assert r.json()["templateId"] == "corpus-checkout"
        served = client.get(f"/v1/runs/{run_id}/series/served", params={"format": "json"}).json()
        assert served["values"] == [2.5, 5, 7.5, 10]
        bad = client.post("/v1/runs", json={"mode": "simulation", "model": TEXT, "parameters": {"demand": [1]}})
        assert (bad.status_code, bad.json()["error"]) == (400, "parameter_length_mismatch")
        plain = "grid: {bins: 1, binSize: 1, binUnit: hours}\nnodes: [{id: a, kind: const, values: [1]}]\n"
        r = client.post("/v1/runs", json={"mode": "simulation", "model": plain, "parameters": {"bins": 2}})
        assert (r.status_code, r.json()["error"]) == (422, "invalid_request")


def test_render_model_takes_text_or_an_object() -> None:
    data, warnings = render_model(parse_model_text(TEXT), {"rate": 1}, data_dir=Path("/x")) or ({}, [])
    assert data["provenance"]["templateId"] == "corpus-checkout" and warnings == []
    assert render_model("grid: {bins: 1}\n", {}, data_dir=Path("/x")) is None
    with pytest.raises(InvalidRequestError):
        render_model("grid: {bins: 1}\n", {"a": 1}, data_dir=Path("/x"))


def test_templates_in_the_data_dir_are_listed_described_generated_and_run(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    folder.mkdir()
    shutil.copy(TEMPLATE, folder / "checkout.yaml")
    (folder / "broken.yaml").write_text("metadata: {id: broken}\nparameters: [{name: x}]\n")
    (folder / "shadow.yml").write_text(TEXT.replace("id: corpus-checkout", "id: order-system"))
    (folder / "notes.txt").write_text("not a template")
    with make_client(tmp_path) as client:
        listed = client.get("/v1/templates").json()
        mine = [t for t in listed["templates"] if t.get("source") == "dataDir"]
        assert [(t["id"], t["title"], t["tags"], t["hasBundle"]) for t in mine] == [
            ("corpus-checkout", "Corpus checkout", ["corpus", "upstream"], False)
        ]
        assert [(i["file"], i["error"].split(":")[0]) for i in listed["invalid"]] == [
            ("broken.yaml", "broken.yaml"),
            ("shadow.yml", "template id 'order-system' is already taken"),
        ]
        detail = client.get("/v1/templates/corpus-checkout").json()
        assert detail["parameters"][0] == {
            "name": "bins",
            "type": "integer",
            "required": False,
            "title": "Bins",
            "default": 4,
            "min": 1,
            "max": 8,
        }
        assert detail["parameters"][1]["arrayOf"] == "integer"
        generated = client.post(
            "/v1/templates/corpus-checkout/generate", json={"parameters": {"bins": 2, "demand": [2, 2]}}
        )
        assert generated.status_code == 200, generated.text
        assert parse_model_text(generated.json()["model"])["nodes"][0]["values"] == [2, 2]
        r = client.post("/v1/runs", json={"template": "corpus-checkout", "parameters": {"rate": 1}})
        assert r.status_code == 201, r.text
        served = client.get(f"/v1/runs/{r.json()['runId']}/series/served", params={"format": "json"}).json()
        assert served["values"] == [10, 20, 30, 40]


def test_a_rendering_that_would_explode_is_refused_before_it_exists() -> None:
    nodes = "".join(f"  - {{id: n{i}, kind: const, values: ${{big}}}}\n" for i in range(200))
    text = (
        "metadata: {id: big}\nparameters: [{name: big, type: array}]\n"
        f"grid: {{bins: 50000, binSize: 1, binUnit: minutes}}\nnodes:\n{nodes}"
    )
    with pytest.raises(TooLargeError) as info:  # 200 uses × ~350 kB of numbers
        render(parse_template(text), {"big": [1234567] * 50000}, data_dir=Path("/x"))
    assert info.value.http_status == 413 and info.value.details["limit"] == 32 * 1024 * 1024
