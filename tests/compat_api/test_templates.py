"""Templates (SPEC §5, §12.12): shipped templates in both modes, parameter errors, placeholder rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.routes import templates as routes_templates
from compat_api.settings import Settings
from compat_api.templates.catalog import BUNDLE_DIR, get_template, instantiate, list_templates, parse_template, render
from engine_live.errors import NotFoundError, TemplateParameterError
from engine_live.model.build import load_graph
from engine_live.model.text import parse_model_text
from engine_live.plan.batch_run import run_model
from ingestion.bundle import bundle_telemetry, load_bundle

SHIPPED = ("http-service", "microservices", "order-system")

CUSTOM = """\
metadata: {id: custom, title: Custom, version: "1"}
parameters:
  - {name: bins, type: integer, default: 3, min: 1, max: 10}
  - {name: level, type: number, default: 5}
  - {name: label, type: string, default: plain}
  - {name: flag, type: boolean, default: false}
  - {name: values, type: array, default: [1, 2, 3]}
  - {name: unit, type: enum, values: [minutes, hours], default: minutes}
  - {name: token, type: string, required: true}
schemaVersion: 1
grid: {bins: "{{bins}}", binSize: 5, binUnit: "${unit}"}
nodes:
  - {id: base, kind: const, values: "{{ values }}"}
  - {id: scaled, kind: expr, expr: "base * {{level}} + ${level}"}
provenance: {label: "{{label}}", note: "tag-{{token}}", flag: "{{flag}}"}
"""


def custom_error(params: dict[str, Any]) -> dict[str, Any]:
    with pytest.raises(TemplateParameterError) as info:
        render(parse_template(CUSTOM), params, data_dir=Path("/nonexistent"))
    assert info.value.http_status == 400
    return info.value.to_body()


def test_shipped_templates_declare_the_common_parameters() -> None:
    assert sorted(t.id for t in list_templates()) == list(SHIPPED)
    for t in list_templates():
        params = {p.name: p for p in t.parameters}
        assert {"q0", "bins", "binSize", "binUnit", "start", "telemetryDir"} <= set(params)
        q0 = params["q0"]
        assert (q0.type, q0.default, q0.min) == ("number", 0, 0)
        assert params["telemetryDir"].type == "string" and not params["telemetryDir"].required
        assert t.summary()["hasBundle"] is True


@pytest.mark.parametrize("template_id", SHIPPED)
def test_simulation_mode_generates_its_own_demand(template_id: str, tmp_path: Path) -> None:
    text, resolved, warnings = instantiate(template_id, {"q0": 5}, data_dir=tmp_path)
    data = parse_model_text(text)
    assert "metadata" not in data and "parameters" not in data
    assert data["provenance"]["templateId"] == template_id and data["provenance"]["mode"] == "simulation"
    assert resolved["q0"] == 5 and resolved["bins"] == 288 and warnings == []
    graph = load_graph(text)
    assert graph.telemetry_ids() == ()
    run = run_model(text)
    arrivals = run.series(graph.topo[0].fields["arrivals"])
    assert len(arrivals) == 288 and arrivals.sum() > 0


@pytest.mark.parametrize("template_id", SHIPPED)
def test_telemetry_mode_runs_on_the_bundled_data(template_id: str, tmp_path: Path) -> None:
    text, _, _ = instantiate(template_id, {"mode": "telemetry"}, data_dir=tmp_path)
    graph = load_graph(text)
    assert len(graph.telemetry_ids()) >= 4
    telemetry, warnings = bundle_telemetry(load_bundle(BUNDLE_DIR / template_id), graph)
    assert set(telemetry) == set(graph.telemetry_ids())  # every telemetry series is fed
    assert "telemetry_missing" not in {w["code"] for w in warnings}
    run = run_model(text, telemetry=telemetry, mode="telemetry")
    for binding in graph.topo:
        for sid in binding.fields.values():
            if sid in telemetry:
                assert np.array_equal(run.series(sid), telemetry[sid])
    fed = [run.series(sid).sum() for sid in telemetry]
    assert all(total > 0 for total in fed)


def test_telemetry_dir_selects_telemetry_mode_and_stays_in_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "bundles" / "ms").mkdir(parents=True)
    text, _, warnings = instantiate(
        "microservices", {"telemetryDir": "bundles/ms", "mode": "simulation"}, data_dir=tmp_path
    )
    assert load_graph(text).telemetry_ids()
    assert parse_model_text(text)["provenance"]["telemetryDir"] == "bundles/ms"
    assert [w["code"] for w in warnings] == ["mode_overridden", "telemetry_dir_missing"]
    with pytest.raises(TemplateParameterError) as info:
        instantiate("microservices", {"telemetryDir": "../outside"}, data_dir=tmp_path)
    assert info.value.to_body() == {
        "error": "out_of_range",
        "message": "parameter 'telemetryDir': must name a folder under the data directory",
        "parameter": "telemetryDir",
        "value": "../outside",
        "allowed": "a folder under <dataDir>",
    }


def test_whole_scalar_placeholders_take_the_json_value_and_inline_ones_splice_text() -> None:
    text, resolved, _ = render(
        parse_template(CUSTOM),
        {"values": [4, 5.5, 6], "label": 'x: "y" # z', "flag": True, "token": "abc", "level": 2},
        data_dir=Path("/nonexistent"),
    )
    data = parse_model_text(text)
    assert data["grid"] == {"bins": 3, "binSize": 5, "binUnit": "minutes"}  # ${unit} is accepted
    assert data["nodes"][0]["values"] == [4, 5.5, 6]
    assert data["nodes"][1]["expr"] == "base * 2 + 2"
    prov = data["provenance"]
    assert {k: prov[k] for k in ("label", "note", "flag")} == {
        "label": 'x: "y" # z',
        "note": "tag-abc",
        "flag": True,
    }
    assert resolved == {
        "bins": 3,
        "level": 2,
        "label": 'x: "y" # z',
        "flag": True,
        "values": [4, 5.5, 6],
        "unit": "minutes",
        "token": "abc",
    }


@pytest.mark.parametrize("bad", ['a"b', "a'b", "a\\b", "a{b", "a}b", "a#b", "a: b", "a\nb", "a\x07b"])
def test_inline_placeholders_reject_unsafe_text(bad: str) -> None:
    assert custom_error({"token": bad}) == {
        "error": "unsafe_parameter_value",
        "message": "parameter 'token': value is used inside a larger YAML scalar and must not contain "
        "quotes, backslashes, braces, '#', ': ' or control characters",
        "parameter": "token",
        "value": bad,
    }


def test_inline_text_with_a_plain_colon_is_fine() -> None:
    text, _, _ = render(parse_template(CUSTOM), {"token": "a:b"}, data_dir=Path("/x"))
    assert parse_model_text(text)["provenance"]["note"] == "tag-a:b"


def test_parameter_error_bodies() -> None:
    assert custom_error({"token": "t", "bins": "ten"}) == {
        "error": "parameter_type_mismatch",
        "message": "parameter 'bins': expected integer, got string",
        "parameter": "bins",
        "expected": "integer",
        "actual": "string",
        "value": "ten",
    }
    assert custom_error({"token": "t", "bins": 2.5})["actual"] == "number"
    assert custom_error({"token": "t", "flag": 1})["expected"] == "boolean"
    assert custom_error({"token": "t", "values": "1,2"})["expected"] == "array"
    assert custom_error({}) == {
        "error": "missing_parameter",
        "message": "parameter 'token' is required",
        "parameter": "token",
        "expected": "string",
    }
    assert custom_error({"token": "t", "colour": "red"}) == {
        "error": "unknown_parameter",
        "message": "template 'custom' has no parameter 'colour'",
        "parameter": "colour",
        "value": "red",
    }
    assert custom_error({"token": "t", "bins": 11}) == {
        "error": "out_of_range",
        "message": "parameter 'bins': 11 is out of range [1, 10]",
        "parameter": "bins",
        "value": 11,
        "min": 1,
        "max": 10,
    }
    assert custom_error({"token": "t", "unit": "days"}) == {
        "error": "out_of_range",
        "message": "parameter 'unit': 'days' is not one of ['minutes', 'hours']",
        "parameter": "unit",
        "value": "days",
        "values": ["minutes", "hours"],
    }


def test_the_first_bad_parameter_in_declaration_order_is_reported(tmp_path: Path) -> None:
    body = custom_error({"colour": 1, "unit": 3.5, "level": "high", "bins": 0})
    assert (body["error"], body["parameter"]) == ("out_of_range", "bins")
    with pytest.raises(TemplateParameterError) as info:
        instantiate("microservices", {"zzz": 1, "q0": -1, "bins": True}, data_dir=tmp_path)
    assert info.value.to_body()["parameter"] == "bins"
    assert info.value.to_body()["actual"] == "boolean"


def test_shipped_q0_must_not_be_negative(tmp_path: Path) -> None:
    with pytest.raises(TemplateParameterError) as info:
        instantiate("order-system", {"q0": -1}, data_dir=tmp_path)
    assert info.value.to_body() == {
        "error": "out_of_range",
        "message": "parameter 'q0': -1 is out of range [0, None]",
        "parameter": "q0",
        "value": -1,
        "min": 0,
        "max": None,
    }


def test_a_placeholder_without_a_parameter_is_an_authoring_error() -> None:
    with pytest.raises(ValueError, match=r"placeholders without a parameter: \['nope'\]"):
        parse_template(CUSTOM + "outputs: [{series: base, as: '{{nope}}.csv'}]\n")


def test_unknown_template_is_404() -> None:
    with pytest.raises(NotFoundError):
        get_template("nope")


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = create_app(Settings(data_dir=tmp_path, port=0))
    app.include_router(routes_templates.router)
    return TestClient(app)


def test_routes_list_describe_and_generate(client: TestClient) -> None:
    listed = client.get("/v1/templates").json()["templates"]
    assert [t["id"] for t in listed] == list(SHIPPED)
    detail = client.get("/v1/templates/microservices").json()
    assert detail["parameters"][0] == {
        "name": "bins",
        "type": "integer",
        "required": False,
        "default": 288,
        "min": 1,
        "max": 100000,
        "description": "Number of bins",
    }
    assert client.get("/v1/templates/nope").status_code == 404
    ok = client.post("/v1/templates/http-service/generate", json={"parameters": {"q0": 3}})
    assert ok.status_code == 200
    body = ok.json()
    assert body["parameters"]["q0"] == 3 and body["warnings"] == [] and load_graph(body["model"])
    bad = client.post("/v1/templates/http-service/generate", json={"parameters": {"workers": "many"}})
    assert bad.status_code == 400
    assert bad.json() == {
        "error": "parameter_type_mismatch",
        "message": "parameter 'workers': expected integer, got string",
        "parameter": "workers",
        "expected": "integer",
        "actual": "string",
        "value": "many",
    }
    assert client.post("/v1/templates/http-service/generate").status_code == 200
