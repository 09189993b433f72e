"""Rendering a template (SPEC §5, §12.12, §13): parameters + template text → a model.

A template is model YAML plus `metadata{id, title, version, …any other keys}` and `parameters[...]`
(upstream's also carry `generator`, `window{start, timezone}` and `mode`). Placeholders are `{{name}}`
and upstream's `${name}`. A placeholder that is a whole YAML scalar takes the value itself (numbers,
booleans, arrays and text keep their type); a whole-scalar placeholder whose value is the empty string
makes the field absent (upstream's `source: ${telemetryDemandSource}` with default ""). Inside a larger
scalar (e.g. an expression) the value is spliced in as text, and values with quotes, backslashes,
braces, `#`, `: ` or control characters are rejected. Besides the declared parameters, `{{binMinutes}}`
(binSize × unit) is available.

An array parameter that fills a const node's `values` must have `grid.bins` items (400
`parameter_length_mismatch` naming both lengths). Modes: with `mode: telemetry` or a `telemetryDir`,
every node that carries `telemetry: true` becomes `{id, kind: const, source: telemetry}`. The model
never contains `metadata`, `parameters` or `generator`, and always passes `load_graph` (`file:`
sources resolve under `base_dir`).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compat_api.templates.params import Parameter, parse_parameter, resolve_parameters
from engine_live.errors import (
    ModelError,
    OutOfRangeError,
    TemplateParameterError,
    TooLargeError,
    UnsafeParameterValueError,
)
from engine_live.model.build import load_graph
from engine_live.model.grid import UNIT_MINUTES
from engine_live.model.series_csv import resolve_inside
from engine_live.model.text import dump_yaml, parse_model_text

PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
MARK = re.compile(r"⟦([A-Za-z_][A-Za-z0-9_]*)⟧")
UNSAFE_INLINE = re.compile(r"[\"'\\{}#\x00-\x1f\x7f]|: ")
BUILTINS = ("binMinutes",)
BUNDLE_DIR = Path(__file__).parent / "bundles"
TEMPLATE_ONLY_KEYS = ("metadata", "parameters", "generator")
ABSENT = object()
MAX_RENDERED_CHARS = 32 * 1024 * 1024


@dataclass(frozen=True)
class Template:
    """A template: its metadata, parameters and model text with placeholders."""

    id: str
    title: str
    version: str
    description: str
    parameters: tuple[Parameter, ...]
    text: str
    origin: str = "builtin"  # builtin | dataDir
    extra: dict[str, Any] = field(default_factory=dict)  # tags, narrative, … (upstream metadata)

    def has_bundle(self) -> bool:
        """Whether a telemetry bundle ships with the template."""
        return self.origin == "builtin" and (BUNDLE_DIR / self.id / "manifest.json").is_file()

    def summary(self) -> dict[str, Any]:
        """The template as the list endpoint shows it (`source` and `tags` only when there are)."""
        out = {
            "id": self.id,
            "title": self.title,
            "version": self.version,
            "description": self.description,
            "hasBundle": self.has_bundle(),
        }
        if self.origin != "builtin":
            out["source"] = self.origin
        return out | ({"tags": self.extra["tags"]} if isinstance(self.extra.get("tags"), list) else {})

    def to_wire(self) -> dict[str, Any]:
        """The summary plus the parameters (`GET /v1/templates/{id}`)."""
        return {**self.summary(), "parameters": [p.to_wire() for p in self.parameters]}


def marked(text: str) -> str:
    """The text with every placeholder written `⟦name⟧` (a plain YAML scalar character)."""
    return PLACEHOLDER.sub(lambda m: f"⟦{m.group(1) or m.group(2)}⟧", text)


def is_template(text: str) -> bool:
    """Whether model text is a template: it declares `parameters` or holds placeholders."""
    if PLACEHOLDER.search(text):
        return True
    if "parameters" not in text:  # no such key: no need to parse (a big model parses in 0.2 s)
        return False
    try:
        data = parse_model_text(text)
    except ModelError:  # not even YAML: the model loader reports it
        return False
    return isinstance(data, dict) and isinstance(data.get("parameters"), list)


def _mark_counts(node: Any, counts: Counter[str] | None = None) -> Counter[str]:
    """How often each placeholder is used in parsed template data (comments are not data)."""
    counts = Counter() if counts is None else counts
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            counts.update(MARK.findall(item))
    return counts


def _marks(node: Any) -> set[str]:
    """The placeholder names used in parsed template data."""
    return set(_mark_counts(node))


def check_rendered_size(text: str, raw: Any, values: dict[str, Any]) -> None:
    """413 when substituting would make a model larger than `MAX_RENDERED_CHARS` (a large array used
    in many places), estimated before anything that size exists."""
    size = len(text)
    for name, count in _mark_counts(raw).items():
        size += count * len(json.dumps(values.get(name)))
    if size > MAX_RENDERED_CHARS:
        raise TooLargeError(
            f"the rendered model would be about {size} characters (at most {MAX_RENDERED_CHARS})",
            limit=MAX_RENDERED_CHARS,
        )


def parse_template(text: str, where: str = "template", *, default_id: str | None = None) -> Template:
    """Read a template's metadata and parameters; ValueError for an authoring mistake."""
    data = parse_model_text(marked(text))
    if not isinstance(data, dict):
        raise ValueError(f"{where}: a template is a mapping with metadata, parameters, grid and nodes")
    meta: dict[str, Any] = data["metadata"] if isinstance(data.get("metadata"), dict) else {}
    template_id = meta.get("id", default_id)
    if not isinstance(template_id, str) or not template_id:
        raise ValueError(f"{where}: metadata.id is required")
    raw_params = data.get("parameters") or []
    if not isinstance(raw_params, list):
        raise ValueError(f"{where}: parameters: must be a list")
    params = tuple(parse_parameter(r, f"{where}: parameters[{i}]") for i, r in enumerate(raw_params))
    names = [p.name for p in params]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: parameter names must be unique")
    unknown = sorted(_marks(data) - set(names) - set(BUILTINS))
    if unknown:
        raise ValueError(f"{where}: placeholders without a parameter: {unknown}")
    extra = {k: v for k, v in meta.items() if k not in ("id", "title", "version", "description")}
    return Template(
        template_id,
        str(meta.get("title", template_id)),
        str(meta.get("version", "1")),
        str(meta.get("description", "")),
        params,
        text,
        extra=extra,
    )


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


def _substitute(node: Any, values: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        pairs = ((_substitute(k, values), _substitute(v, values)) for k, v in node.items())
        return {k: v for k, v in pairs if v is not ABSENT}
    if isinstance(node, list):
        return [("" if item is ABSENT else item) for item in (_substitute(v, values) for v in node)]
    if isinstance(node, str):
        whole = MARK.fullmatch(node)
        if whole:
            value = values.get(whole.group(1))
            return ABSENT if value == "" else json.loads(json.dumps(value))
        return MARK.sub(lambda m: _inline(m.group(1), values.get(m.group(1))), node)
    return node


def substitute(node: Any, values: dict[str, Any]) -> Any:
    """Replace marked placeholders in parsed template data (whole scalar → value, "" → field absent,
    else inline text)."""
    out = _substitute(node, values)
    return None if out is ABSENT else out


def _array_fills(data: Any, params: tuple[Parameter, ...]) -> list[tuple[str, str]]:
    """(const node id, array parameter) for each const whose `values` is one array placeholder."""
    arrays = {p.name for p in params if p.type == "array"}
    out = []
    for node in data.get("nodes") or [] if isinstance(data, dict) else []:
        if isinstance(node, dict) and node.get("kind") == "const" and isinstance(node.get("values"), str):
            whole = MARK.fullmatch(node["values"])
            if whole and whole.group(1) in arrays:
                out.append((str(node.get("id")), whole.group(1)))
    return out


def check_array_lengths(data: dict[str, Any], fills: list[tuple[str, str]], resolved: dict[str, Any]) -> None:
    """An array parameter feeding a const's values must have grid.bins items (400 otherwise)."""
    grid = data.get("grid")
    bins = grid.get("bins") if isinstance(grid, dict) else None
    if isinstance(bins, bool) or not isinstance(bins, int):
        return
    for node_id, name in fills:
        value = resolved.get(name)
        if isinstance(value, list) and len(value) != bins:
            raise TemplateParameterError(
                f"parameter '{name}' provides {len(value)} values but grid.bins is {bins}; "
                f"const node '{node_id}' requires matching length",
                code="parameter_length_mismatch",
                parameter=name,
                expected=bins,
                actual=len(value),
                nodeId=node_id,
            )


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


def _mode_warnings(tdir: str, parameters: dict[str, Any], data_dir: Path) -> list[dict[str, Any]]:
    warnings: list[dict[str, Any]] = []
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
    return warnings


def _model_data(template: Template, resolved: dict[str, Any], telemetry: bool) -> tuple[dict[str, Any], bool]:
    """The substituted model data without template-only keys, and whether it is in telemetry mode."""
    values = dict(resolved)
    if "binSize" in resolved and resolved.get("binUnit", "minutes") in UNIT_MINUTES:
        values["binMinutes"] = resolved["binSize"] * UNIT_MINUTES[resolved.get("binUnit", "minutes")]
    raw = parse_model_text(marked(template.text))
    check_rendered_size(template.text, raw, values)
    fills = _array_fills(raw, template.parameters)
    data = substitute(raw, values)
    if not isinstance(data, dict):
        raise ValueError(f"template '{template.id}' is not a mapping")
    check_array_lengths(data, fills, resolved)
    for key in TEMPLATE_ONLY_KEYS:
        data.pop(key, None)
    if data.pop("mode", None) == "telemetry":
        telemetry = True
    for i, node in enumerate(data.get("nodes") or []):
        if isinstance(node, dict) and node.pop("telemetry", False) and telemetry:
            data["nodes"][i] = {"id": node["id"], "kind": "const", "source": "telemetry"}
    return data, telemetry


def render(
    template: Template, parameters: dict[str, Any], *, data_dir: Path, base_dir: Path | None = None
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """Template + parameters → (model YAML text, resolved parameters, warnings). Raises 400/422.
    `file:` sources resolve under `base_dir` (default `<data_dir>/inputs`, as for every model sent
    over HTTP)."""
    resolved = resolve_parameters(template.id, template.parameters, parameters)
    tdir = resolved.get("telemetryDir")
    warnings = _mode_warnings(tdir, parameters, data_dir) if tdir else []
    data, telemetry = _model_data(template, resolved, resolved.get("mode") == "telemetry" or bool(tdir))
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
    load_graph(text, base_dir=base_dir if base_dir is not None else data_dir / "inputs")  # 422 when invalid
    return text, resolved, warnings


__all__ = [
    "MARK",
    "PLACEHOLDER",
    "Template",
    "check_array_lengths",
    "is_template",
    "marked",
    "parse_template",
    "render",
    "substitute",
]
