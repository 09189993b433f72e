"""Template routes (SPEC §8, §12.12, §13): list, describe and generate models from templates.

The shipped templates and every template file in `<dataDir>/templates/` (upstream's as they are; files
that are not usable templates are listed under `invalid` with the reason). GET needs `read`; generating
needs `ingest` (§12.15). Parameter errors answer 400 with the first bad parameter in declaration order;
a template that cannot produce a valid model answers 422.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from compat_api.auth import require
from compat_api.context import AppContext, get_ctx
from compat_api.http_errors import ERROR_RESPONSES, error_doc
from compat_api.templates.catalog import data_dir_templates, get_template, instantiate, list_templates

router = APIRouter(prefix="/v1/templates", tags=["templates"], responses=ERROR_RESPONSES)

PARAMETER_ERRORS: dict[int | str, dict[str, Any]] = {
    400: error_doc(
        "parameter_type_mismatch, missing_parameter, unknown_parameter, out_of_range, unsafe_parameter_value",
        {
            "error": "parameter_type_mismatch",
            "message": "parameter 'bins': expected integer, got string",
            "parameter": "bins",
            "expected": "integer",
            "actual": "string",
            "value": "twelve",
        },
    ),
    404: error_doc("unknown template", {"error": "not_found", "message": "unknown template 'nope'"}),
    422: error_doc("the generated model is invalid", {"error": "invalid_model", "message": "...", "errors": []}),
}


class GenerateRequest(BaseModel):
    """Template parameter values; parameters left out take their defaults."""

    model_config = ConfigDict(extra="forbid")

    parameters: dict[str, Any] = Field(default_factory=dict)


class GenerateResponse(BaseModel):
    """A generated model: its YAML text, the resolved parameters and any warnings."""

    templateId: str
    model: str
    parameters: dict[str, Any]
    warnings: list[dict[str, Any]]


TEMPLATE_SUMMARY = {
    "id": "http-service",
    "title": "HTTP service with a request queue",
    "version": "1.0",
    "description": "One HTTP service behind a request queue, sized by workers and per-worker throughput.",
    "hasBundle": True,
}
TEMPLATE_DETAIL = {
    **TEMPLATE_SUMMARY,
    "parameters": [
        {
            "name": "bins",
            "type": "integer",
            "required": False,
            "default": 288,
            "min": 1,
            "max": 100000,
            "description": "Number of bins",
        },
        {
            "name": "q0",
            "type": "number",
            "required": False,
            "default": 0,
            "min": 0,
            "description": "Initial depth of the request queue",
        },
    ],
}


@router.get(
    "",
    dependencies=[Depends(require("read"))],
    responses={200: {"content": {"application/json": {"example": {"templates": [TEMPLATE_SUMMARY]}}}}},
)
async def templates_list(ctx: AppContext = Depends(get_ctx)) -> dict[str, Any]:  # noqa: B008
    """A summary of every available template (shipped, then `<dataDir>/templates/`)."""
    body: dict[str, Any] = {"templates": [t.summary() for t in list_templates(ctx.data_dir)]}
    invalid = data_dir_templates(ctx.data_dir)[1]
    if invalid:
        body["invalid"] = [i.to_wire() for i in invalid]
    return body


@router.get(
    "/{template_id}",
    dependencies=[Depends(require("read"))],
    responses={200: {"content": {"application/json": {"example": TEMPLATE_DETAIL}}}, 404: PARAMETER_ERRORS[404]},
)
async def template_detail(template_id: str, ctx: AppContext = Depends(get_ctx)) -> dict[str, Any]:  # noqa: B008
    """One template with its parameter definitions."""
    return get_template(template_id, ctx.data_dir).to_wire()


@router.post("/{template_id}/generate", dependencies=[Depends(require("ingest"))], responses=PARAMETER_ERRORS)
async def template_generate(
    template_id: str,
    body: GenerateRequest | None = None,
    ctx: AppContext = Depends(get_ctx),  # noqa: B008
) -> GenerateResponse:
    """Generate a model from a template and the given parameter values."""
    given = body.parameters if body is not None else {}
    model, resolved, warnings = instantiate(template_id, given, data_dir=ctx.data_dir)
    return GenerateResponse(templateId=template_id, model=model, parameters=resolved, warnings=warnings)
