"""Model templates (SPEC §5, §12.12): parameterised model YAML → a runnable model.

A template is model YAML plus `metadata{id, title, version}` and `parameters[...]`. Placeholders are
`{{name}}` (or upstream `${name}`). A placeholder that is a whole YAML scalar takes the value itself
(the JSON-encoded value, so numbers, booleans and arrays keep their type); inside a larger scalar
(e.g. an expression) the value is spliced in as text, and values with quotes, backslashes, braces,
`#`, `: ` or control characters are rejected. Besides the declared parameters, `{{binMinutes}}`
(binSize × unit) is available.

Modes: with `mode: telemetry` or a `telemetryDir`, every node that carries `telemetry: true` becomes
`{id, kind: const, source: telemetry}` so a bundle or live frames feed it; in simulation mode the
marker is dropped and the template's own expressions generate the demand. The output never contains
`metadata` or `parameters`, and always passes `load_graph`.

Parameter errors (400) report the first bad parameter in declaration order, then unknown names.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from compat_api.templates.params import Parameter, parse_parameter, resolve_parameters
from engine_live.errors import NotFoundError, OutOfRangeError, UnsafeParameterValueError
from engine_live.model.build import load_graph
from engine_live.model.grid import UNIT_MINUTES
from engine_live.model.series_csv import resolve_inside
from engine_live.model.text import dump_yaml, parse_model_text

TEMPLATE_DIR = Path(__file__).parent
BUNDLE_DIR = TEMPLATE_DIR / "bundles"
PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MARK = re.compile(r"⟦([A-Za-z_][A-Za-z0-9_]*)⟧")
UNSAFE_INLINE = re.compile(r"[\"'\\{}#\x00-\x1f\x7f]|: ")
BUILTINS = ("binMinutes",)


@dataclass(frozen=True)
class Template:
    """A bundled template: its metadata, parameters and model text with placeholders."""

    id: str
    title: str
    version: str
    description: str
    parameters: tuple[Parameter, ...]
    text: str

    def summary(self) -> dict[str, Any]:
        """The template as the list endpoint shows it."""
        return {
            "id": self.id,
            "title": self.title,
            "version": self.version,
            "description": self.description,
            "hasBundle": (BUNDLE_DIR / self.id / "manifest.json").is_file(),
        }

    def to_wire(self) -> dict[str, Any]:
        """The summary plus the parameters."""
        return {**self.summary(), "parameters": [p.to_wire() for p in self.parameters]}


def _marked(text: str) -> str:
    return PLACEHOLDER.sub(lambda m: f"⟦{m.group(1) or m.group(2)}⟧", text)


def parse_template(text: str, where: str = "template") -> Template:
    """Read a template's metadata and parameters; ValueError for an authoring mistake."""
    data = parse_model_text(_marked(text))
    meta = data.get("metadata") if isinstance(data, dict) else None
    if not isinstance(meta, dict) or not isinstance(meta.get("id"), str):
        raise ValueError(f"{where}: metadata.id is required")
    params = tuple(parse_parameter(r, f"{where}: parameters[{i}]") for i, r in enumerate(data.get("parameters") or []))
    names = {p.name for p in params}
    unknown = sorted(set(MARK.findall(_marked(text))) - names - set(BUILTINS))
    if unknown:
        raise ValueError(f"{where}: placeholders without a parameter: {unknown}")
    return Template(
        meta["id"],
        str(meta.get("title", meta["id"])),
        str(meta.get("version", "1")),
        str(meta.get("description", "")),
        params,
        text,
    )


@cache
def _catalog() -> dict[str, Template]:
    out: dict[str, Template] = {}
    for path in sorted(TEMPLATE_DIR.glob("*.yaml")):
        t = parse_template(path.read_text(encoding="utf-8"), path.name)
        out[t.id] = t
    return out


def list_templates() -> list[Template]:
    """Every bundled template."""
    return list(_catalog().values())


def get_template(template_id: str) -> Template:
    """The template with this id, or NotFoundError."""
    try:
        return _catalog()[template_id]
    except KeyError:
        raise NotFoundError(f"unknown template '{template_id}'", templateId=template_id) from None


def _inline(name: str, value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if UNSAFE_INLINE.search(text):
        raise UnsafeParameterValueError(
            f"parameter '{name}': value is used inside a larger YAML scalar and must not contain "
            "quotes, backslashes, braces, '#', ': ' or control characters",
            parameter=name,
            value=value,
        )
    return text


def substitute(node: Any, values: dict[str, Any]) -> Any:
    """Replace marked placeholders in parsed template data (whole scalar → value, else inline text)."""
    if isinstance(node, dict):
        return {substitute(k, values): substitute(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [substitute(v, values) for v in node]
    if isinstance(node, str):
        whole = MARK.fullmatch(node)
        if whole:
            return json.loads(json.dumps(values.get(whole.group(1))))
        return MARK.sub(lambda m: _inline(m.group(1), values.get(m.group(1))), node)
    return node


def _telemetry_dir(value: str, data_dir: Path) -> Path:
    try:
        return resolve_inside(data_dir, value)
    except ValueError:
        raise OutOfRangeError(
            "parameter 'telemetryDir': must name a folder under the data directory",
            parameter="telemetryDir",
            value=value,
            allowed="a folder under <dataDir>",
        ) from None


def instantiate(
    template_id: str, parameters: dict[str, Any], *, data_dir: Path
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """Template + parameters → (model YAML text, resolved parameters, warnings). Raises 400/404/422."""
    return render(get_template(template_id), parameters, data_dir=data_dir)


def render(
    template: Template, parameters: dict[str, Any], *, data_dir: Path
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """`instantiate` for a Template object (e.g. one read with `parse_template`)."""
    resolved = resolve_parameters(template.id, template.parameters, parameters)
    warnings: list[dict[str, Any]] = []
    tdir = resolved.get("telemetryDir")
    telemetry = resolved.get("mode") == "telemetry" or bool(tdir)
    if tdir:
        folder = _telemetry_dir(tdir, data_dir)
        if parameters.get("mode") == "simulation":
            warnings.append(
                {
                    "code": "mode_overridden",
                    "severity": "info",
                    "parameter": "mode",
                    "message": "telemetryDir is set: the model is generated in telemetry mode",
                }
            )
        if not (folder / "manifest.json").is_file():
            warnings.append(
                {
                    "code": "telemetry_dir_missing",
                    "severity": "warning",
                    "parameter": "telemetryDir",
                    "message": f"telemetryDir '{tdir}' holds no telemetry bundle (manifest.json) yet",
                }
            )
    values = dict(resolved)
    if "binSize" in resolved and resolved.get("binUnit", "minutes") in UNIT_MINUTES:
        values["binMinutes"] = resolved["binSize"] * UNIT_MINUTES[resolved.get("binUnit", "minutes")]
    data = substitute(parse_model_text(_marked(template.text)), values)
    data.pop("metadata", None)
    data.pop("parameters", None)
    for i, node in enumerate(data.get("nodes") or []):
        if isinstance(node, dict) and node.pop("telemetry", False) and telemetry:
            data["nodes"][i] = {"id": node["id"], "kind": "const", "source": "telemetry"}
    own = data.get("provenance")
    data["provenance"] = {
        **(own if isinstance(own, dict) else {}),
        "generator": "flowtime-live/templates",
        "templateId": template.id,
        "templateVersion": template.version,
        "mode": "telemetry" if telemetry else "simulation",
        "parameters": resolved,
        **({"telemetryDir": tdir} if tdir else {}),
    }
    header = f"# Generated from template '{template.id}' v{template.version} ({data['provenance']['mode']} mode)\n"
    text = header + dump_yaml(data)
    load_graph(text)  # a template must always produce a valid model (raises ModelError, 422)
    return text, resolved, warnings


def template_bundle(template_id: str) -> Path:
    """The telemetry bundle shipped with a template (404 when it has none)."""
    folder = BUNDLE_DIR / get_template(template_id).id
    if not (folder / "manifest.json").is_file():
        raise NotFoundError(f"template '{template_id}' ships no telemetry bundle", templateId=template_id)
    return folder


def install_template_bundle(template_id: str, bundles_dir: Path) -> Path:
    """Copy a template's bundle to `<bundles_dir>/<template-id>` (kept when already there)."""
    target = bundles_dir / template_id
    if not (target / "manifest.json").is_file():
        shutil.copytree(template_bundle(template_id), target, dirs_exist_ok=True)
    return target


__all__ = [
    "Parameter",
    "Template",
    "get_template",
    "install_template_bundle",
    "instantiate",
    "list_templates",
    "parse_template",
    "render",
    "resolve_parameters",
    "substitute",
    "template_bundle",
]
