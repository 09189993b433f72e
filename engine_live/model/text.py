"""Reading model text: YAML (fast Rust reader, PyYAML fallback) or JSON, into plain Python data."""

from __future__ import annotations

from typing import Any

import orjson

from engine_live.errors import ModelError

_ryaml: Any
try:  # YAML 1.2, ~15x faster than PyYAML's C loader on large models
    import ryaml as _ryaml
except ImportError:  # pragma: no cover - ryaml is a declared dependency
    _ryaml = None


def parse_model_text(text: str) -> Any:
    """Parse model text (JSON or YAML). Raises ModelError with a clear message on bad syntax."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # YAML flow mappings also start with "{"
    if _ryaml is not None:
        try:
            return _ryaml.loads(text)
        except Exception as exc:  # ryaml raises its own InvalidYamlError and ValueErrors
            raise ModelError(f"model is not valid YAML: {exc}") from None
    import yaml  # pragma: no cover

    try:  # pragma: no cover
        return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:  # pragma: no cover
        raise ModelError(f"model is not valid YAML: {exc}") from None


def dump_yaml(data: Any) -> str:
    """Deterministic YAML text (block style, keys in insertion order)."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=None, width=120))
