"""Reading model text: YAML (the Rust `ryaml` reader) or JSON, into plain Python data; writing YAML."""

from __future__ import annotations

from typing import Any

import orjson
import ryaml  # YAML 1.2, ~15x faster than PyYAML's C loader on large models

from engine_live.errors import ModelError


def parse_model_text(text: str) -> Any:
    """Parse model text (JSON or YAML). Raises ModelError with a clear message on bad syntax."""
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            pass  # YAML flow mappings also start with "{"
    try:
        return ryaml.loads(text)  # type: ignore[attr-defined]  # the package re-exports it implicitly
    except Exception as exc:  # ryaml raises its own InvalidYamlError and ValueErrors
        raise ModelError(f"model is not valid YAML: {exc}") from None


def dump_yaml(data: Any) -> str:
    """Deterministic YAML text (block style, keys in insertion order)."""
    import yaml

    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return str(yaml.dump(data, Dumper=dumper, sort_keys=False, default_flow_style=None, width=120))
