"""OpenAPI links (SPEC §8): how the id a create answers with feeds the run's other operations.

A client (or schemathesis' stateful tests) follows them: `POST /v1/runs` answers `runId`, which is the
`run_id` of `GET /v1/runs/{run_id}`, its state, series and deletion — and, for a live run (202),
of `/bins`, `/close`, `/snapshots` and `PATCH /model`. Added to the generated document, so they
stay next to the routes they name without repeating operation ids by hand.
"""

from __future__ import annotations

from typing import Any

RUN_ID = {"run_id": "$response.body#/runId"}
FINISHED_RUN_OPS = (
    ("GET", "/v1/runs/{run_id}"),
    ("GET", "/v1/runs/{run_id}/state"),
    ("GET", "/v1/runs/{run_id}/index"),
    ("GET", "/v1/runs/{run_id}/graph"),
    ("GET", "/v1/runs/{run_id}/metrics"),
    ("POST", "/v1/runs/{run_id}/export"),
    ("DELETE", "/v1/runs/{run_id}"),
)
LIVE_RUN_OPS = (
    ("GET", "/v1/runs/{run_id}"),
    ("POST", "/v1/runs/{run_id}/bins"),
    ("GET", "/v1/runs/{run_id}/state"),
    ("GET", "/v1/runs/{run_id}/state/live"),
    ("POST", "/v1/runs/{run_id}/snapshots"),
    ("PATCH", "/v1/runs/{run_id}/model"),
    ("POST", "/v1/runs/{run_id}/close"),
    ("DELETE", "/v1/runs/{run_id}"),
)
LINKS = {
    ("POST", "/v1/runs", "201"): FINISHED_RUN_OPS,
    ("POST", "/v1/runs", "202"): LIVE_RUN_OPS,
    ("POST", "/v1/run", "200"): FINISHED_RUN_OPS,
}


def _link_name(method: str, path: str) -> str:
    words = [w for w in path.removeprefix("/v1/runs/{run_id}").split("/") if w]  # GetRun, PostBins, GetStateLive
    return method.capitalize() + "".join(w.title().replace("_", "") for w in words or ["run"])


def add_links(doc: dict[str, Any]) -> dict[str, Any]:
    """The document with the create operations' responses linked to the operations on the new run."""
    paths = doc.get("paths", {})
    for (method, path, status), targets in LINKS.items():
        response = paths.get(path, {}).get(method.lower(), {}).get("responses", {}).get(status)
        if response is None:
            continue
        links = response.setdefault("links", {})
        for target_method, target_path in targets:
            target = paths.get(target_path, {}).get(target_method.lower())
            if target is not None and "operationId" in target:
                links[_link_name(target_method, target_path)] = {
                    "operationId": target["operationId"],
                    "parameters": dict(RUN_ID),
                }
    return doc
