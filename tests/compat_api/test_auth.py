"""Bearer tokens (SPEC §10, §12.15): scopes, run patterns, expiry, hashed storage, the bind check."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi import APIRouter, Depends
from fastapi.testclient import TestClient

from compat_api.app import create_app
from compat_api.auth import (
    TokenAuthenticator,
    check_bind,
    grant,
    is_loopback,
    load_authenticator,
    load_tokens_file,
    parse_tokens_setting,
    require,
)
from compat_api.context import AllowAll, AppContext
from compat_api.settings import Settings
from engine_live.errors import ForbiddenError, InsecureBindError, TokenConfigError, UnauthenticatedError

SECRET = "s3cret-Token-value"
NOW = datetime(2025, 10, 7, 12, 0, tzinfo=UTC)


def auth_of(*grants_text: str) -> TokenAuthenticator:
    return TokenAuthenticator(parse_tokens_setting(";".join(grants_text)), now=lambda: NOW)


def test_missing_and_unknown_tokens_are_401() -> None:
    auth = auth_of(f"{SECRET}:read")
    for token in (None, "", "wrong"):
        with pytest.raises(UnauthenticatedError) as info:
            auth.check(token, "read", None)
        assert info.value.http_status == 401 and info.value.ws_close_code == 4401
    auth.check(SECRET, "read", "any-run")


def test_scopes_nest_admin_over_ingest_over_read() -> None:
    auth = auth_of("r:read", "i:ingest", "a:admin")
    allowed = {
        (t, s)
        for t in "ria"
        for s in ("read", "ingest", "admin")
        if {"r": 0, "i": 1, "a": 2}[t] >= ("read", "ingest", "admin").index(s)
    }
    for token in "ria":
        for scope in ("read", "ingest", "admin"):
            if (token, scope) in allowed:
                auth.check(token, scope, None)
            else:
                with pytest.raises(ForbiddenError) as info:
                    auth.check(token, scope, None)
                assert info.value.to_body()["error"] == "forbidden" and info.value.http_status == 403
    assert len(allowed) == 6


def test_metrics_is_its_own_scope_implied_by_admin_only() -> None:
    auth = auth_of("r:read", "i:ingest", "a:admin", "m:metrics", "rm:read,metrics")
    for token in ("a", "m", "rm"):
        auth.check(token, "metrics", None)
    for token in ("r", "i"):
        with pytest.raises(ForbiddenError) as info:
            auth.check(token, "metrics", None)
        assert info.value.details == {"scope": "metrics"}
    with pytest.raises(ForbiddenError):
        auth.check("m", "read", None)  # metrics grants nothing else
    file_grant = grant(scopes=["metrics"], token="x", runs=["a*"])
    assert file_grant.allows_scope("metrics") and not file_grant.allows_scope("read")


def test_run_patterns_are_globs() -> None:
    auth = auth_of("tok:read,ingest:a*|demo-?")
    auth.check("tok", "read", "a1")
    auth.check("tok", "ingest", "demo-7")
    auth.check("tok", "read", None)  # no run in the request: scope only
    for run in ("b1", "demo-17", "A1"):
        with pytest.raises(ForbiddenError):
            auth.check("tok", "read", run)


def test_expired_tokens_are_refused() -> None:
    g = grant(scopes=["read"], token=SECRET, expires="2025-10-07T11:59:59Z", name="old")
    with pytest.raises(UnauthenticatedError, match="expired"):
        TokenAuthenticator([g], now=lambda: NOW).check(SECRET, "read", None)
    later = grant(scopes=["read"], token=SECRET, expires="2025-10-07T12:00:01Z")
    TokenAuthenticator([later], now=lambda: NOW).check(SECRET, "read", None)


def test_the_plain_token_is_not_kept_anywhere() -> None:
    auth = auth_of(f"{SECRET}:admin:x*")
    (g,) = auth.grants
    assert g.sha256 == hashlib.sha256(SECRET.encode()).hexdigest()
    seen = repr(vars(auth)) + repr(g) + repr(vars(g))
    assert SECRET not in seen
    with pytest.raises(ForbiddenError) as info:
        auth.check(SECRET, "read", "y1")
    assert SECRET not in info.value.message and SECRET not in json.dumps(info.value.to_body())


def test_hashed_tokens_and_bad_settings() -> None:
    digest = hashlib.sha256(b"other").hexdigest()
    auth = TokenAuthenticator(parse_tokens_setting(f"sha256={digest}:read"))
    auth.check("other", "read", None)
    for text in (f"{SECRET}", f"{SECRET}:write", f"{SECRET}:", f"{SECRET}:read:a*:b", "sha256=abc:read"):
        with pytest.raises(TokenConfigError) as info:
            parse_tokens_setting(text)
        assert SECRET not in info.value.message


def test_token_files_in_json_and_toml(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"hashed-one").hexdigest()
    js = tmp_path / "tokens.json"
    js.write_text(
        json.dumps(
            [
                {"name": "dash", "token": "plain-one", "scopes": ["read"]},
                {
                    "name": "feeder",
                    "tokenSha256": digest,
                    "scopes": ["ingest"],
                    "runs": ["a*"],
                    "expires": "2030-01-01T00:00:00Z",
                },
            ]
        )
    )
    toml = tmp_path / "tokens.toml"
    toml.write_text(
        '[[tokens]]\nname = "dash"\ntoken = "plain-one"\nscopes = ["read"]\n\n'
        f'[[tokens]]\nname = "feeder"\ntokenSha256 = "{digest}"\nscopes = ["ingest"]\nruns = ["a*"]\n'
        "expires = 2030-01-01T00:00:00Z\n"
    )
    for path in (js, toml):
        grants = load_tokens_file(path)
        assert [g.name for g in grants] == ["dash", "feeder"]
        assert grants[1].runs == ("a*",) and grants[1].expires == datetime(2030, 1, 1, tzinfo=UTC)
        auth = TokenAuthenticator(grants, now=lambda: NOW)
        auth.check("hashed-one", "ingest", "a9")
        with pytest.raises(ForbiddenError):
            auth.check("plain-one", "ingest", None)
    js.write_text(json.dumps([{"token": "x", "scopes": ["read"], "colour": "red"}]))
    with pytest.raises(TokenConfigError, match="unknown keys"):
        load_tokens_file(js)


def test_load_authenticator_and_bind_check(tmp_path: Path) -> None:
    off = Settings(host="127.0.0.1", port=0, data_dir=tmp_path)
    assert isinstance(load_authenticator(off), AllowAll)
    assert "auth is off" in check_bind(off)
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        with pytest.raises(InsecureBindError, match="refusing"):
            check_bind(Settings(host=host, port=0, data_dir=tmp_path))
    on = Settings(host="0.0.0.0", port=0, data_dir=tmp_path, tokens=f"{SECRET}:admin")
    assert isinstance(load_authenticator(on), TokenAuthenticator)
    line = check_bind(on)
    assert "auth is on" in line and SECRET not in line
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.8.9.10", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.1", "", "localhost.evil.com"))


def test_rest_routes_apply_the_check_and_never_log_the_token(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(port=0, data_dir=tmp_path, tokens=f"{SECRET}:read:a*;ingester:ingest")
    app = create_app(settings, AppContext(settings, auth=load_authenticator(settings)))
    probe = APIRouter()

    @probe.get("/probe/{run_id}", dependencies=[Depends(require("read"))])
    async def read_run(run_id: str) -> dict[str, str]:
        return {"runId": run_id}

    app.include_router(probe)
    client = TestClient(app)
    caplog.set_level(logging.DEBUG)
    assert client.get("/probe/a1").json() == {
        "error": "unauthenticated",
        "message": "a bearer token is required",
    }
    assert client.get("/probe/a1", headers={"Authorization": f"Bearer {SECRET}"}).status_code == 200
    denied = client.get("/probe/b1", headers={"Authorization": f"Bearer {SECRET}"})
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    assert client.get("/probe/b1", headers={"Authorization": "Bearer ingester"}).status_code == 200
    assert client.get("/probe/a1", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/healthz").status_code == 200
    assert SECRET not in caplog.text
