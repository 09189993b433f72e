"""`GET /v1/artifacts[/{id}]`: a registry of what is on disk — runs, telemetry bundles, models (SPEC §8).

Runs are complete run folders; bundles are `<dataDir>/bundles/<id>/manifest.json`; models are
`<dataDir>/models/<id>.yaml|.yml|.json`. Nothing is cached: the folders are the registry.

Decisions where the spec is silent: a bundle's `createdUtc` is its `provenance.capturedAtUtc`, a
model's its file's modification time; `search` is a case-insensitive substring of id, title or
templateId; items are sorted newest first, then by id; an id found under several types is looked
up in the order run, bundle, model unless `type` says which.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Depends, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from compat_api.access import Access, get_access
from compat_api.auth import require
from compat_api.context import AppContext, get_ctx
from compat_api.http_errors import ERROR_RESPONSES
from compat_api.run_store import RUN_ID_RE, parse_created_after
from engine_live.errors import InvalidRequestError, NotFoundError
from engine_live.model.grid import format_utc, parse_utc
from engine_live.model.text import parse_model_text

Ctx = Annotated[AppContext, Depends(get_ctx)]
Acc = Annotated[Access, Depends(get_access)]
router = APIRouter(tags=["artifacts"], responses=ERROR_RESPONSES)
ArtifactType = Literal["run", "model", "bundle"]
MODEL_SUFFIXES = (".yaml", ".yml", ".json")
ITEM_EXAMPLE = {
    "id": "run_20251007T000000Z_1a2b3c4d",
    "type": "run",
    "title": "run_20251007T000000Z_1a2b3c4d",
    "createdUtc": "2025-10-07T00:00:00Z",
    "templateId": "order-system",
    "links": {
        "self": "/v1/artifacts/run_20251007T000000Z_1a2b3c4d",
        "run": "/v1/runs/run_20251007T000000Z_1a2b3c4d",
    },
}


def _json_file(path: Path) -> dict[str, Any] | None:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def run_items(ctx: AppContext) -> list[dict[str, Any]]:
    """Registry items of every complete run folder."""
    out = []
    for s in ctx.run_store.summaries():
        rid = s["runId"]
        out.append(
            {
                "id": rid,
                "type": "run",
                "title": rid,
                "createdUtc": s.get("createdUtc"),
                "templateId": s.get("templateId"),
                "mode": s.get("mode"),
                "status": s.get("status"),
                "binMinutes": s.get("binMinutes"),
                "links": {"self": f"/v1/artifacts/{rid}", "run": f"/v1/runs/{rid}"},
            }
        )
    return out


def bundle_items(ctx: AppContext) -> list[dict[str, Any]]:
    """Registry items of every telemetry bundle with a manifest under `<dataDir>/bundles/`."""
    out = []
    root = ctx.bundles_dir
    for folder in sorted(root.iterdir()) if root.is_dir() else ():
        manifest = _json_file(folder / "manifest.json") if RUN_ID_RE.match(folder.name) else None
        if manifest is None:
            continue
        prov = manifest.get("provenance") or {}
        out.append(
            {
                "id": folder.name,
                "type": "bundle",
                "title": folder.name,
                "createdUtc": prov.get("capturedAtUtc"),
                "templateId": prov.get("templateId"),
                "sourceRunId": prov.get("runId"),
                "grid": manifest.get("grid"),
                "window": manifest.get("window"),
                "files": len(manifest.get("files") or ()),
                "links": {"self": f"/v1/artifacts/{folder.name}"},
            }
        )
    return out


def model_items(ctx: AppContext) -> list[dict[str, Any]]:
    """Registry items of every model file under `<dataDir>/models/`."""
    out = []
    root = ctx.data_dir / "models"
    for path in sorted(root.iterdir()) if root.is_dir() else ():
        if path.suffix not in MODEL_SUFFIXES or not path.is_file() or not RUN_ID_RE.match(path.stem):
            continue
        meta: dict[str, Any] = {}
        try:
            data = parse_model_text(path.read_text(encoding="utf-8"))
            if isinstance(data, dict):
                meta = {**(data.get("metadata") or {}), **(data.get("provenance") or {})}
        except Exception:
            meta = {}
        created = format_utc(datetime.fromtimestamp(path.stat().st_mtime, UTC))
        out.append(
            {
                "id": path.stem,
                "type": "model",
                "title": str(meta.get("title") or path.stem),
                "createdUtc": created,
                "templateId": meta.get("templateId") or meta.get("id"),
                "file": path.name,
                "links": {"self": f"/v1/artifacts/{path.stem}"},
            }
        )
    return out


COLLECTORS = {"run": run_items, "bundle": bundle_items, "model": model_items}


def artifact_run(item: dict[str, Any]) -> str | None:
    """The run an artifact belongs to (what a token must be allowed to read): a run's own id, the run
    a bundle was captured from; a model belongs to none."""
    run_id = item["id"] if item.get("type") == "run" else item.get("sourceRunId")
    return run_id if isinstance(run_id, str) else None


def _matches(item: dict[str, Any], search: str | None, template_id: str | None, after: datetime | None) -> bool:
    if template_id is not None and item.get("templateId") != template_id:
        return False
    if search:
        needle = search.lower()
        hay = " ".join(str(item.get(k) or "") for k in ("id", "title", "templateId")).lower()
        if needle not in hay:
            return False
    if after is not None:
        try:
            return isinstance(item.get("createdUtc"), str) and parse_utc(item["createdUtc"]) > after
        except ValueError:
            return False
    return True


def list_artifacts(
    ctx: AppContext, kind: str | None, search: str | None, template_id: str | None, created_after: str | None
) -> list[dict[str, Any]]:
    """Registry items of the given type that match the filters, newest first, then by id."""
    after = parse_created_after(created_after)
    items = [i for k, fn in COLLECTORS.items() if kind in (None, k) for i in fn(ctx)]
    items = [i for i in items if _matches(i, search, template_id, after)]
    items.sort(key=lambda i: str(i["id"]))
    items.sort(key=lambda i: str(i.get("createdUtc") or ""), reverse=True)
    return items


def artifact_detail(ctx: AppContext, artifact_id: str, kind: str | None) -> dict[str, Any]:
    """One registry item with its files, manifest or model text; NotFoundError when there is none."""
    for k, fn in COLLECTORS.items():
        if kind not in (None, k):
            continue
        for item in fn(ctx):
            if item["id"] != artifact_id:
                continue
            if k == "run":
                run_dir = ctx.run_store.run_dir(artifact_id)
                files = sorted(
                    str(p.relative_to(run_dir))
                    for p in run_dir.rglob("*")
                    if p.is_file() and p.relative_to(run_dir).parts[0] != "live"
                )
                return {**item, "files": files}
            if k == "bundle":
                return {**item, "manifest": _json_file(ctx.bundles_dir / artifact_id / "manifest.json")}
            text = (ctx.data_dir / "models" / item["file"]).read_text(encoding="utf-8")
            return {**item, "model": text}
    raise NotFoundError(f"artifact {artifact_id!r} not found", artifactId=artifact_id)


@router.get(
    "/v1/artifacts",
    dependencies=[Depends(require("read"))],
    responses={
        200: {
            "content": {"application/json": {"example": {"items": [ITEM_EXAMPLE], "total": 1, "limit": 50, "skip": 0}}}
        }
    },
)
async def artifacts(
    ctx: Ctx,
    access: Acc,
    type: Annotated[ArtifactType | None, Query(examples=["run"])] = None,
    search: Annotated[str | None, Query(examples=["order"])] = None,
    template_id: Annotated[str | None, Query(alias="templateId", examples=["order-system"])] = None,
    created_after: Annotated[str | None, Query(alias="createdAfter", examples=["2025-10-07T00:00:00Z"])] = None,
    limit: Annotated[int | None, Query(ge=1, examples=[50])] = None,
    skip: Annotated[int, Query(ge=0, examples=[0])] = 0,
) -> JSONResponse:
    """Runs, telemetry bundles and models on disk, newest first, with filters and paging."""
    size = limit or ctx.settings.page_size
    if size > ctx.settings.page_size_max:
        raise InvalidRequestError(f"limit: at most {ctx.settings.page_size_max}", code="invalid_paging", limit=size)
    found = await run_in_threadpool(list_artifacts, ctx, type, search, template_id, created_after)
    items = access.visible(found, artifact_run)
    return JSONResponse({"items": items[skip : skip + size], "total": len(items), "limit": size, "skip": skip})


@router.get(
    "/v1/artifacts/{artifact_id}",
    dependencies=[Depends(require("read"))],
    responses={200: {"content": {"application/json": {"example": {**ITEM_EXAMPLE, "files": ["manifest.json"]}}}}},
)
async def artifact(
    artifact_id: str, ctx: Ctx, access: Acc, type: Annotated[ArtifactType | None, Query(examples=["bundle"])] = None
) -> JSONResponse:
    """One artifact: a run with its files, a bundle with its manifest, a model with its text."""
    detail = await run_in_threadpool(artifact_detail, ctx, artifact_id, type)
    access.check("read", artifact_run(detail))
    return JSONResponse(detail)
