"""HTTP routes of the exports domain: request an export, poll it, download its file and its
manifest; list and save templates."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core import clock
from ordertally.core.http import client_ip, database, json_response
from ordertally.exports import service
from ordertally.exports.errors import ExportNotReady, PiiNotAllowed
from ordertally.exports.models import ExportAudit
from ordertally.exports.schemas import ExportIn, TemplateIn

router = APIRouter(prefix="/api/v1/exports", tags=["exports"])

MEDIA = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _iso(value: datetime | None) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def export_doc(e: ExportAudit) -> dict[str, Any]:
    """An export's JSON: request, progress and, once done, its manifest."""
    return {
        "export_no": e.export_no,
        "template": e.template,
        "format": e.format,
        "columns": e.columns,
        "filters": e.filters,
        "timezone": e.timezone,
        "pii_unmasked": e.pii_unmasked,
        "requested_by": e.actor_id,
        "role": e.role,
        "source_ip": e.source_ip,
        "state": e.state,
        "rows_total": e.rows_total,
        "rows_done": e.rows_done,
        "progress": (
            1.0 if e.state == "done" else (e.rows_done / e.rows_total if e.rows_total else 0.0)
        ),
        "snapshot_at": _iso(e.snapshot_at),
        "manifest": e.manifest,
        "error": e.error,
        "created_at": _iso(e.created_at),
        "finished_at": _iso(e.finished_at),
        "expires_at": _iso(e.expires_at),
    }


@router.get("/templates", summary="Built-in and saved export templates with their columns")
async def list_templates(
    request: Request, _: Annotated[Principal, Depends(require("exports.read"))]
) -> Response:
    """Every template: its columns (key and header), filters and whether it sums amounts."""
    async with database(request).transaction(write=False) as session:
        saved = await service.saved_templates(session)
    built_in = [
        {
            "name": t.name,
            "title": {"zh": t.title_zh, "en": t.title_en},
            "columns": [
                {"key": c.key, "zh": c.header_zh, "en": c.header_en, "pii": c.pii}
                for c in t.columns
            ],
            "filters": sorted(t.filters),
            "sums_amount": t.amount is not None,
            "built_in": True,
        }
        for t in service.templates().values()
    ]
    custom = [
        {"name": s.name, "base": s.base, "columns": s.columns, "built_in": False} for s in saved
    ]
    return json_response({"items": built_in + custom})


@router.post("/templates", status_code=201, summary="Save a custom template (column choice)")
async def save_template(
    request: Request,
    body: TemplateIn,
    principal: Annotated[Principal, Depends(require("exports.create"))],
) -> Response:
    """Save a built-in template's rows with a chosen list of columns under a new name."""
    async with database(request).transaction() as session:
        saved = await service.save_template(session, body, principal.name)
    return json_response({"name": saved.name, "base": saved.base, "columns": saved.columns}, 201)


@router.post("", status_code=202, summary="Request an export (runs as a background job)")
async def create_export(
    request: Request,
    body: ExportIn,
    principal: Annotated[Principal, Depends(require("exports.create"))],
) -> Response:
    """Queue an export; poll `GET /exports/{export_no}` for its progress and manifest."""
    requester = service.Requester(
        principal.name,
        principal.role,
        client_ip(request),
        warehouses=principal.warehouses,
        channels=principal.channels,
    )
    async with database(request).transaction() as session:
        export = await service.request_export(session, body, requester)
    return json_response(
        export_doc(export), 202, {"Location": f"/api/v1/exports/{export.export_no}"}
    )


@router.get("", summary="The newest exports")
async def list_exports(
    request: Request,
    principal: Annotated[Principal, Depends(require("exports.read"))],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Response:
    """The newest exports first, with their state and progress (a channel-scoped caller: the
    exports of its accounts only)."""
    async with database(request).transaction(write=False) as session:
        rows = await service.list_exports(session, limit)
    return json_response(
        {"items": [export_doc(e) for e in rows if service.visible_to(e, principal.channels)]}
    )


@router.get("/{export_no}", summary="An export's state, progress and manifest")
async def get_export(
    request: Request,
    export_no: str,
    principal: Annotated[Principal, Depends(require("exports.read"))],
) -> Response:
    """Poll an export."""
    async with database(request).transaction(write=False) as session:
        export = service.check_visible(
            await service.get_export(session, export_no), principal.channels
        )
    return json_response(export_doc(export))


@router.get("/{export_no}/manifest", summary="An export's manifest (row count, sums, SHA-256)")
async def get_manifest(
    request: Request,
    export_no: str,
    principal: Annotated[Principal, Depends(require("exports.read"))],
) -> Response:
    """The manifest of a finished export, as a downloadable JSON file."""
    async with database(request).transaction(write=False) as session:
        export = service.check_visible(
            await service.get_export(session, export_no), principal.channels
        )
    if export.manifest is None:
        raise ExportNotReady(f"export {export_no} is {export.state}")
    return json_response(
        export.manifest,
        headers={"Content-Disposition": f'attachment; filename="{export.export_no}.manifest.json"'},
    )


@router.get("/{export_no}/file", summary="Download a finished export's file")
async def download(
    request: Request,
    export_no: str,
    principal: Annotated[Principal, Depends(require("exports.read"))],
) -> Response:
    """The file, once done and until it expires; a file with personal data in clear only for
    the roles that may see it."""
    async with database(request).transaction(write=False) as session:
        export = service.check_visible(
            await service.get_export(session, export_no), principal.channels
        )
    if export.pii_unmasked and (
        principal.role not in service.PII_ROLES or principal.warehouses is not None
    ):
        raise PiiNotAllowed(f"export {export_no} holds personal data in clear")
    path = service.file_path(export)
    if path is None:
        raise ExportNotReady(f"export {export_no} is {export.state}")
    return FileResponse(path, media_type=MEDIA[export.format], filename=path.name)
