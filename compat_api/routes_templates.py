"""Template routes (SPEC §8, §12.12): list, describe and generate models from templates.

GET needs `read`; generating needs `ingest` (§12.15). Parameter errors answer 400 with the first bad
parameter in declaration order; a template that cannot produce a valid model answers 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from compat_api.auth import require
from compat_api.context import AppContext, get_ctx
from compat_api.templates import get_template, instantiate, list_templates

router = APIRouter(prefix="/v1/templates", tags=["templates"])

PARAMETER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "parameter_type_mismatch, missing_parameter, unknown_parameter, out_of_range"},
    404: {"description": "unknown template"},
    422: {"description": "the generated model is invalid"},
}


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] = Field(default_factory=dict)


class GenerateResponse(BaseModel):
    templateId: str
    model: str
    parameters: dict[str, Any]
    warnings: list[dict[str, Any]]


@router.get("", dependencies=[Depends(require("read"))])
async def templates_list() -> dict[str, Any]:
    return {"templates": [t.summary() for t in list_templates()]}


@router.get("/{template_id}", dependencies=[Depends(require("read"))], responses={404: PARAMETER_ERRORS[404]})
async def template_detail(template_id: str) -> dict[str, Any]:
    return get_template(template_id).to_wire()


@router.post("/{template_id}/generate", dependencies=[Depends(require("ingest"))], responses=PARAMETER_ERRORS)
async def template_generate(
    template_id: str,
    body: GenerateRequest | None = None,
    ctx: AppContext = Depends(get_ctx),  # noqa: B008
) -> GenerateResponse:
    given = body.parameters if body is not None else {}
    model, resolved, warnings = instantiate(template_id, given, data_dir=ctx.data_dir)
    return GenerateResponse(templateId=template_id, model=model, parameters=resolved, warnings=warnings)
