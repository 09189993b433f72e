"""Template parameters (SPEC §5, §12.12): declarations, type and range checks, and their 400 errors.

Types: number, integer, boolean, string, enum (`values`), array (numbers when `min`/`max` are set,
which then bound every item). Error bodies:

    parameter_type_mismatch  {parameter, expected, actual, value}   actual is the JSON type name
    missing_parameter        {parameter, expected}
    unknown_parameter        {parameter, value}
    out_of_range             {parameter, value, min, max} | {parameter, value, values} (enum)
                             | {parameter, value, allowed} (telemetryDir outside the data folder)
    unsafe_parameter_value   {parameter, value}   text not allowed inside a larger YAML scalar

`resolve_parameters` reports the first bad parameter in declaration order, then unknown names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from engine_live.errors import (
    MissingParameterError,
    OutOfRangeError,
    ParameterTypeMismatchError,
    UnknownParameterError,
)

PARAM_TYPES = ("number", "integer", "boolean", "string", "enum", "array")


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

    def to_wire(self) -> dict[str, Any]:
        """The parameter as the templates API shows it (empty fields left out)."""
        out: dict[str, Any] = {"name": self.name, "type": self.type, "required": self.required}
        for key in ("default", "min", "max", "description"):
            if getattr(self, key) not in (None, ""):
                out[key] = getattr(self, key)
        if self.values is not None:
            out["values"] = list(self.values)
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


def check_value(p: Parameter, value: Any) -> Any:
    """The value, coerced (3.0 → 3 for integers); raises the parameter's 400 error."""
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if p.type in ("number", "integer"):
        if not is_number or (p.type == "integer" and isinstance(value, float) and not value.is_integer()):
            raise _mismatch(p, value)
        value = int(value) if p.type == "integer" else value
        if not _in_range(p, float(value)):
            raise _out_of_range(p, value)
    elif (p.type == "boolean" and not isinstance(value, bool)) or (p.type == "string" and not isinstance(value, str)):
        raise _mismatch(p, value)
    elif p.type == "enum":
        if not (isinstance(value, str) or is_number):
            raise _mismatch(p, value)
        if value not in (p.values or ()):
            raise OutOfRangeError(
                f"parameter '{p.name}': {value!r} is not one of {list(p.values or ())}",
                parameter=p.name,
                value=value,
                values=list(p.values or ()),
            )
    elif p.type == "array":
        if not isinstance(value, list):
            raise _mismatch(p, value)
        if p.min is not None or p.max is not None:
            for item in value:
                if not isinstance(item, int | float) or isinstance(item, bool):
                    raise _mismatch(p, value)
                if not _in_range(p, float(item)):
                    raise _out_of_range(p, value)
    return value


def parse_parameter(raw: Any, where: str) -> Parameter:
    """A parameter from its template declaration; ValueError (a template bug) when malformed."""
    if not isinstance(raw, dict) or not isinstance(raw.get("name"), str) or raw.get("type") not in PARAM_TYPES:
        raise ValueError(f"{where}: each parameter needs a name and a type among {PARAM_TYPES}")
    values = raw.get("values")
    p = Parameter(
        raw["name"],
        raw["type"],
        raw.get("default"),
        tuple(values) if values is not None else None,
        raw.get("min"),
        raw.get("max"),
        bool(raw.get("required", False)),
        str(raw.get("description", "")),
    )
    if p.default is not None:
        check_value(p, p.default)
    return p


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
    "json_type",
    "parse_parameter",
    "resolve_parameters",
]
