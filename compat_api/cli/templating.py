"""Templates on the command line (SPEC §12.11, §13): `flowtime run|validate FILE --param name=value …`.

A FILE that declares `parameters` or holds `{{name}}` / `${name}` placeholders is a template (any
template file: upstream's as they are); it is rendered with the given values (each read as its
parameter's declared type, the rest taking their defaults) into the model that runs. `file:` sources
and `telemetryDir` resolve in the template's folder. `--param` on a plain model is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compat_api.templates.params import coerce_text
from compat_api.templates.render import is_template, parse_template, render
from engine_live.errors import BadInputError, ModelError, UnknownParameterError


def parse_params(pairs: list[str]) -> dict[str, str]:
    """`name=value` pairs as a dict (BadInputError for a pair without `=`)."""
    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise BadInputError(f"--param {pair!r}: write name=value")
        out[name.strip()] = value
    return out


def render_file(text: str, folder: Path, pairs: list[str], where: str) -> tuple[str, list[dict[str, Any]]]:
    """The model text of a file (rendered when it is a template) and the template's warnings."""
    given = parse_params(pairs)
    if not is_template(text):
        if given:
            raise BadInputError(f"{where} declares no parameters: --param applies to templates")
        return text, []
    try:
        template = parse_template(text, where, default_id=Path(where).stem)
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    declared = {p.name: p for p in template.parameters}
    values: dict[str, Any] = {}
    for name, value in given.items():
        if name not in declared:
            message = f"template '{template.id}' has no parameter '{name}'"
            raise UnknownParameterError(message, parameter=name, value=value)
        values[name] = coerce_text(declared[name], value)
    model, _, warnings = render(template, values, data_dir=folder, base_dir=folder)
    return model, warnings


__all__ = ["parse_params", "render_file"]
