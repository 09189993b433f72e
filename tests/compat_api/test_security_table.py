"""docs/security.md stays complete: every route the app serves has a row with its scope and run
check, no row names a protected route that is gone, and every setting is listed with its default."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from security_doc import endpoint_rows, served_endpoints, setting_rows

from compat_api.app import create_app
from compat_api.compose import build_context
from compat_api.settings import Settings


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> FastAPI:
    settings = Settings(data_dir=tmp_path_factory.mktemp("data"))
    return create_app(settings, build_context(settings))


def test_every_route_is_in_the_table(app: FastAPI) -> None:
    served = served_endpoints(app)
    assert ("WS", "/v1/runs/{run_id}/stream") in served and ("GET", "/v1/runs") in served
    missing = sorted(served - set(endpoint_rows()))
    assert missing == [], f"routes missing from the endpoint table of docs/security.md: {missing}"


def test_every_protected_row_is_a_route(app: FastAPI) -> None:
    served = served_endpoints(app)
    stale = sorted(key for key, row in endpoint_rows().items() if row.scope is not None and key not in served)
    assert stale == [], f"docs/security.md lists routes the app does not serve: {stale}"


def test_every_row_says_what_run_check_it_applies() -> None:
    for key, row in endpoint_rows().items():
        assert row.check.strip(), key
        if "{run_id}" in key[1]:
            assert row.check.startswith("path"), f"{key}: a route with a run in its path checks it"


def doc_default(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return f"`./{value}`"
    return f"`{value}`"


def test_every_setting_is_listed_with_its_default() -> None:
    rows = setting_rows()
    for name, field in Settings.model_fields.items():
        assert name in rows, f"setting {name!r} is missing from the limits table of docs/security.md"
        default = field.get_default(call_default_factory=True)
        assert rows[name] == doc_default(default), f"{name}: documented {rows[name]}, default {default!r}"
    assert sorted(set(rows) - set(Settings.model_fields)) == []
