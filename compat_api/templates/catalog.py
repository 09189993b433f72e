"""The template catalog (SPEC §5, §12.12, §13): the shipped templates and those in `<dataDir>/templates/`.

Shipped templates (`compat_api/templates/*.yaml`) are read once. Every `*.yaml` / `*.yml` file in
`<dataDir>/templates/` is a template too (upstream's files as they are): re-read when it changes, listed
after the shipped ones with `source: dataDir`. A file that cannot be read as a template is listed under
`invalid` with the reason; an id already taken (a shipped one, or an earlier file) is invalid too, so a
data folder cannot shadow a shipped template. Rendering is `engine_live`-free text work in `render`.

Parameter errors (400) report the first bad parameter in declaration order, then unknown names.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from compat_api.templates.params import Parameter, resolve_parameters
from compat_api.templates.render import BUNDLE_DIR, Template, is_template, parse_template, render, substitute
from engine_live.errors import InvalidRequestError, ModelError, NotFoundError
from engine_live.model.text import parse_model_text

TEMPLATE_DIR = Path(__file__).parent
TEMPLATE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
MAX_TEMPLATE_BYTES = 8 * 1024 * 1024
_file_cache: dict[Path, tuple[tuple[int, int], Template | str]] = {}


@dataclass(frozen=True)
class Invalid:
    """A data-folder file that is not a usable template."""

    file: str
    error: str

    def to_wire(self) -> dict[str, str]:
        """`{file, error}`."""
        return {"file": self.file, "error": self.error}


@cache
def _catalog() -> dict[str, Template]:
    out: dict[str, Template] = {}
    for path in sorted(TEMPLATE_DIR.glob("*.yaml")):
        t = parse_template(path.read_text(encoding="utf-8"), path.name)
        out[t.id] = t
    return out


def read_template_file(path: Path) -> Template:
    """A template file (any upstream template), its id defaulting to the file name; ValueError if unusable."""
    try:
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise ValueError(f"{path.name}: larger than {MAX_TEMPLATE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path.name}: cannot be read ({exc})") from None
    try:
        return parse_template(text, path.name, default_id=path.stem)
    except Exception as exc:
        raise ValueError(str(getattr(exc, "message", exc))) from None


def _data_dir_entry(path: Path) -> Template | str:
    try:
        stat = path.stat()
    except OSError as exc:
        return f"{path.name}: {exc.strerror or exc}"
    key = (stat.st_mtime_ns, stat.st_size)
    cached = _file_cache.get(path)
    if cached is not None and cached[0] == key:
        return cached[1]
    try:
        entry: Template | str = read_template_file(path)
    except ValueError as exc:
        entry = str(exc)
    if isinstance(entry, Template):
        entry = replace(entry, origin="dataDir")
    _file_cache[path] = (key, entry)
    return entry


def data_dir_templates(data_dir: Path | None) -> tuple[list[Template], list[Invalid]]:
    """The usable templates of `<data_dir>/templates/` (sorted by file name) and the unusable files."""
    folder = data_dir / "templates" if data_dir is not None else None
    if folder is None or not folder.is_dir():
        return [], []
    taken = set(_catalog())
    good: list[Template] = []
    bad: list[Invalid] = []
    for path in sorted(p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file()):
        entry = _data_dir_entry(path)
        if isinstance(entry, str):
            bad.append(Invalid(path.name, entry))
        elif not TEMPLATE_ID.match(entry.id):
            bad.append(Invalid(path.name, f"metadata.id {entry.id!r} must match {TEMPLATE_ID.pattern}"))
        elif entry.id in taken:
            bad.append(Invalid(path.name, f"template id '{entry.id}' is already taken"))
        else:
            taken.add(entry.id)
            good.append(entry)
    return good, bad


def list_templates(data_dir: Path | None = None) -> list[Template]:
    """Every shipped template, then those of `<data_dir>/templates/`."""
    return [*_catalog().values(), *data_dir_templates(data_dir)[0]]


def get_template(template_id: str, data_dir: Path | None = None) -> Template:
    """The template with this id (shipped first, then the data folder), or NotFoundError."""
    found = _catalog().get(template_id)
    if found is None:
        found = next((t for t in data_dir_templates(data_dir)[0] if t.id == template_id), None)
    if found is None:
        raise NotFoundError(f"unknown template '{template_id}'", templateId=template_id)
    return found


def instantiate(
    template_id: str, parameters: dict[str, Any], *, data_dir: Path
) -> tuple[str, dict[str, Any], list[dict[str, Any]]]:
    """Template + parameters → (model YAML text, resolved parameters, warnings). Raises 400/404/422."""
    return render(get_template(template_id, data_dir), parameters, data_dir=data_dir)


def render_model(
    source: str | dict[str, Any], parameters: dict[str, Any], *, data_dir: Path
) -> tuple[dict[str, Any], list[dict[str, Any]]] | None:
    """A model sent as text or object that is a template (upstream's as they are), rendered with
    `parameters`: (model data, warnings); None for a plain model (422 when it is given parameters)."""
    text = source if isinstance(source, str) else json.dumps(source)
    if not is_template(text):
        if parameters:
            raise InvalidRequestError("parameters apply to templates: this model declares none", code="invalid_request")
        return None
    try:
        template = parse_template(text, "model", default_id="model")
    except ValueError as exc:
        raise ModelError(str(exc)) from None
    model, _, warnings = render(template, parameters, data_dir=data_dir)
    data = parse_model_text(model)
    assert isinstance(data, dict)
    return data, warnings


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
    "BUNDLE_DIR",
    "Invalid",
    "Parameter",
    "Template",
    "data_dir_templates",
    "get_template",
    "install_template_bundle",
    "instantiate",
    "list_templates",
    "parse_template",
    "read_template_file",
    "render",
    "render_model",
    "resolve_parameters",
    "substitute",
    "template_bundle",
]
