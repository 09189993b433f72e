"""Template parameters (SPEC §5, §12.12, §13): declarations, type and range checks, and their 400 errors.

Types: number, integer, boolean, string, enum (`values`), array (numbers when `arrayOf` or `min`/`max`
is set; `min`/`max` then bound every item). Upstream's spellings are read too: `minimum`/`maximum` for
`min`/`max`, `enum` for `values` (on any type), `arrayOf: double|number|int|integer` for the item type,
`title`; other declaration keys are ignored (upstream's schema allows them). Error bodies:

    parameter_type_mismatch  {parameter, expected, actual, value}   actual is the JSON type name
    missing_parameter        {parameter, expected}
    unknown_parameter        {parameter, value}
    out_of_range             {parameter, value, min, max} | {parameter, value, values} (enum)
                             | {parameter, value, allowed} (telemetryDir outside the data folder)
    unsafe_parameter_value   {parameter, value}   text not allowed inside a larger YAML scalar

`resolve_parameters` reports the first bad parameter in declaration order, then unknown names.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from engine_live.errors import (
    MissingParameterError,
    OutOfRangeError,
    ParameterTypeMismatchError,
    TemplateParameterError,
    UnknownParameterError,
)

PARAM_TYPES = ("number", "integer", "boolean", "string", "enum", "array")
ITEM_TYPES = {"double": "number", "number": "number", "float": "number", "int": "integer", "integer": "integer"}


@dataclass(frozen=True)
class Parameter:
    """One declared template parameter: its type and the values it may take."""

    name: str
    type: str
    default: Any = None
    values: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    required: bool = False
    description: str = ""
    title: str = ""
    item_type: str | None = None  # array items: "number" or "integer" (upstream `arrayOf`)

    def to_wire(self) -> dict[str, Any]:
        """The parameter as the templates API shows it (empty fields left out)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        for key in ("title", "default", "min", "max", "description"):
            if getattr(self, key) not in (None, ""):
                out[key] = getattr(self, key)
        if self.values is not None:
            out["values"] = list(self.values)
        if self.item_type is not None:
            out["arrayOf"] = self.item_type
        return out


def json_type(value: Any) -> str:
    """The JSON type name of a value (`integer` for ints, `boolean` for bools)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    for kind, name in ((float, "number"), (str, "string"), (list, "array"), (dict, "object")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _mismatch(p: Parameter, value: Any) -> ParameterTypeMismatchError:
    return ParameterTypeMismatchError(
        f"parameter '{p.name}': expected {p.type}, got {json_type(value)}",
        parameter=p.name,
        expected=p.type,
        actual=json_type(value),
        value=value,
    )


def _in_range(p: Parameter, number: float) -> bool:
    return math.isfinite(number) and (p.min is None or number >= p.min) and (p.max is None or number <= p.max)


def _out_of_range(p: Parameter, value: Any) -> OutOfRangeError:
    return OutOfRangeError(
        f"parameter '{p.name}': {value!r} is out of range [{p.min}, {p.max}]",
        parameter=p.name,
        value=value,
        min=p.min,
        max=p.max,
    )


def _check_items(p: Parameter, value: list[Any]) -> list[Any]:
    if p.item_type is None and p.min is None and p.max is None:
        return value
    items = []
    for item in value:
        if not isinstance(item, int | float) or isinstance(item, bool):
            raise _mismatch(p, value)
        if p.item_type == "integer":
            if isinstance(item, float) and not item.is_integer():
                raise _mismatch(p, value)
            item = int(item)
        if not _in_range(p, float(item)):
            raise _out_of_range(p, value)
        items.append(item)
    return items


def _check_enum(p: Parameter, value: Any) -> None:
    if p.values is not None and value not in p.values:
        raise OutOfRangeError(
            f"parameter '{p.name}': {value!r} is not one of {list(p.values)}",
            parameter=p.name,
            value=value,
            values=list(p.values),
        )


def _type_ok(kind: str, value: Any, *, is_number: bool) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "enum":
        return isinstance(value, str) or is_number
    return True


def check_value(p: Parameter, value: Any) -> Any:
    """The value, coerced (3.0 → 3 for integers); raises the parameter's 400 error."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if p.type in ("number", "integer"):
        if not is_number or (p.type == "integer" and isinstance(value, float) and not value.is_integer()):
            raise _mismatch(p, value)
        value = int(value) if p.type == "integer" else value
        if not _in_range(p, float(value)):
            raise _out_of_range(p, value)
    elif not _type_ok(p.type, value, is_number=is_number):
        raise _mismatch(p, value)
    elif p.type == "array":
        if not isinstance(value, list):
            raise _mismatch(p, value)
        return _check_items(p, value)
    _check_enum(p, value)
    return value


def _bound(raw: dict[str, Any], short: str, long: str, where: str) -> Any:
    if short in raw and long in raw and raw[short] != raw[long]:
        raise ValueError(f"{where}: give {short} or {long}, not both")
    value = raw.get(short, raw.get(long))
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise ValueError(f"{where}: {short}: must be a number, got {value!r}")
    return value


def parse_parameter(raw: Any, where: str) -> Parameter:
    """A parameter from its template declaration; ValueError (a template bug) when malformed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or raw.get("type") not in PARAM_TYPES:
        raise ValueError(f"{where}: each parameter needs a name and a type among {PARAM_TYPES}")
    values = raw.get("values", raw.get("enum"))
    if values is not None and not isinstance(values, list):
        raise ValueError(f"{where}: enum: must be a list of the allowed values")
    item_type = raw.get("arrayOf")
    if item_type is not None and ITEM_TYPES.get(str(item_type).lower()) is None:
        raise ValueError(f"{where}: arrayOf: must be one of {', '.join(ITEM_TYPES)}, got {item_type!r}")
    p = Parameter(
        raw["name"],
        raw["type"],
        raw.get("default"),
        tuple(values) if values is not None else None,
        _bound(raw, "min", "minimum", where),
        _bound(raw, "max", "maximum", where),
        bool(raw.get("required", False)),
        str(raw.get("description", "")),
        str(raw.get("title", "")),
        ITEM_TYPES[str(item_type).lower()] if item_type is not None else None,
    )
    if p.default is not None:
        try:
            check_value(p, p.default)
        except TemplateParameterError as exc:
            raise ValueError(f"{where}: default: {exc.message}") from None
    return p


def coerce_text(p: Parameter, text: str) -> Any:
    """A command-line value (`--param name=text`) as the parameter's type: numbers, `true`/`false`, a
    JSON list or comma-separated numbers for arrays; text stays text when it does not read as the type
    (the type check then names it)."""
    try:
        if p.type in ("number", "integer"):
            number = float(text)
            return int(number) if p.type == "integer" and number.is_integer() else number
        if p.type == "boolean" and text.lower() in ("true", "false"):
            return text.lower() == "true"
        if p.type == "array":
            value = json.loads(text) if text.lstrip().startswith("[") else [float(x) for x in text.split(",") if x]
            return [int(x) if isinstance(x, float) and x.is_integer() else x for x in value]
        if p.type == "enum" and text not in (p.values or ()):
            return json.loads(text)
    except ValueError:
        return text
    return text


def resolve_parameters(template_id: str, parameters: tuple[Parameter, ...], given: dict[str, Any]) -> dict[str, Any]:
    """Declared parameters in order (given value, else default); the first bad one raises."""
    resolved: dict[str, Any] = {}
    for p in parameters:
        value = given.get(p.name)
        if value is None:
            if p.default is None:
                if p.required:
                    raise MissingParameterError(f"parameter '{p.name}' is required", parameter=p.name, expected=p.type)
                continue
            value = p.default
        resolved[p.name] = check_value(p, value)
    declared = {p.name for p in parameters}
    for name, value in given.items():
        if name not in declared:
            raise UnknownParameterError(
                f"template '{template_id}' has no parameter '{name}'", parameter=name, value=value
            )
    return resolved


__all__ = [
    "PARAM_TYPES",
    "Parameter",
    "check_value",
    "coerce_text",
    "json_type",
    "parse_parameter",
    "resolve_parameters",
]
