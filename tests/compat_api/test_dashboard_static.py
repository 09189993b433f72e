"""The dashboard is a static page: no CDN, no build step, a module script that parses."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "compat_api" / "dashboard"
FILES = ("index.html", "style.css", "app.js", "format.js", "store.js", "stream.js", "graph.js", "inspector.js")
FILES += ("compare.js", "classes.js")
MODULES = tuple(f for f in FILES if f.endswith(".js"))
# XML namespace names are identifiers, never fetched
NAMESPACES = ("http://www.w3.org/2000/svg",)


def text(name: str) -> str:
    return (DASHBOARD / name).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", FILES)
def test_file_exists_and_fetches_nothing_from_outside(name: str) -> None:
    body = text(name)
    for ns in NAMESPACES:
        body = body.replace(ns, "")
    assert not re.search(r"https?://", body), re.findall(r"https?://\S+", body)
    assert not re.search(r"(?:src|href)\s*=\s*[\"']//", body), "protocol-relative URL"
    assert not re.search(r"@import\s+url\(\s*[\"']?(?:https?:)?//", body)


def test_index_loads_app_js_as_a_module_and_the_stylesheet() -> None:
    html = text("index.html")
    assert re.search(r'<script[^>]*type="module"[^>]*src="[^"]*app\.js"', html)
    assert re.search(r'<link[^>]*rel="stylesheet"[^>]*href="[^"]*style\.css"', html)


def test_index_has_the_hooks_the_app_uses() -> None:
    html = text("index.html")
    app = text("app.js")
    ids = set(re.findall(r'\$\("([\w-]+)"\)', app))
    assert {"seq", "graph", "warnings", "run-select", "auth-form", "conn"} <= ids
    assert {"scrubber", "follow", "bin-label", "compare-select", "compare-panel", "inspector", "legend-items"} <= ids
    for element_id in ids:
        assert f'id="{element_id}"' in html, element_id


def test_app_exposes_the_test_globals() -> None:
    app = text("app.js")
    assert "window.__flowtime" in app
    for name in ("seq", "epoch", "connected", "nodeColors", "reconnects", "viewBin", "following", "perf"):
        assert re.search(rf"\bget {name}\(\)", app), name
    graph = text("graph.js")
    assert '"data-node-id"' in graph and '"data-color"' in graph and '"data-metric"' in graph


@pytest.mark.parametrize("name", MODULES)
def test_modules_import_only_siblings(name: str) -> None:
    for target in re.findall(r'^import .* from "([^"]+)";', text(name), re.MULTILINE):
        assert target.startswith("./") and (DASHBOARD / target[2:]).is_file(), (name, target)


def test_legend_states_the_spec_thresholds() -> None:
    fmt = text("format.js")
    for rule in ("< 70 %", "70–90 %", "≥ 90 %", "≤ SLA", "1.5 × SLA", "dead-letter"):
        assert rule in fmt, rule


@pytest.mark.parametrize("name", MODULES)
def test_modules_parse(name: str) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    result = subprocess.run([node, "--check", str(DASHBOARD / name)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_dashboard_files_ship_with_the_package() -> None:
    pyproject = (DASHBOARD.parents[1] / "pyproject.toml").read_text(encoding="utf-8")
    for ext in ("html", "js", "css"):
        assert f'"*.{ext}"' in pyproject
