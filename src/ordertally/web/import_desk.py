"""The order file import screen: upload a platform's CSV or XLSX export for a channel account,
pick its template (or let the columns tell), watch the worker import it with a progress bar,
and download the rejected rows with their reasons. `channels.file_imports` stores the upload
before answering and runs the command line's own import path in the worker."""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.responses import RedirectResponse, Response

from ordertally.channels import file_imports, import_cli
from ordertally.channels import service as channels_service
from ordertally.channels.errors import FileImportNotFound
from ordertally.core.errors import OrdertallyError
from ordertally.core.http import client_ip
from ordertally.exports.service import PII_ROLES
from ordertally.web import pages
from ordertally.web.case_desk import actor_name, say
from ordertally.web.i18n import N_
from ordertally.web.security import SignedIn, check_channel, check_csrf, database, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)
log = logging.getLogger(__name__)

# The body limit of the upload route (app.body_limits): the file and the form's few fields.
UPLOAD_BODY_BYTES = file_imports.MAX_BYTES + 64 * 1024
STATE_LABELS: dict[str, str] = {
    "queued": N_("Queued"),
    "running": N_("Running"),
    "done": N_("Done"),
    "failed": N_("Failed"),
}
TEMPLATE_LABELS: dict[str, str] = {
    "douyin": N_("Douyin shop export"),
    "jd": N_("JD export"),
    "taobao": N_("Taobao export"),
    "pinduoduo": N_("Pinduoduo export"),
    "generic": N_("Generic columns"),
    "custom": N_("The account's saved column mapping"),
}
REFUSALS: dict[str, str] = {
    "file": N_("Choose a .csv or .xlsx file of at most 20 MB."),
    "template": N_("Choose one of the templates."),
    "account": N_("Choose a channel account that takes order files."),
}


async def _form_page(
    request: Request, user: SignedIn, *, error: str | None = None, status: int = 200
) -> Response:
    async with database(request).transaction(write=False) as session:
        accounts = [
            a
            for a in await channels_service.list_accounts(session)
            if a.platform in import_cli.FILE_PLATFORMS and user.may_act_for_channel(a.code)
        ]
        imports = [
            i for i in await file_imports.recent(session) if user.may_act_for_channel(i.account)
        ]
    context = pages._common(
        request,
        user,
        active="channels",
        accounts=accounts,
        imports=imports,
        templates=TEMPLATE_LABELS,
        state_labels=STATE_LABELS,
        error=error,
    )
    return render(request, "imports.html", context, status=status)


@router.get("/ui/channels/import")
async def import_page(request: Request) -> Response:
    """Upload an order file; the latest imports with their state."""
    user = await signed_in(request, "channels.import")
    return await _form_page(request, user)


@router.post("/ui/channels/import")
async def upload(request: Request) -> Response:
    """Store the uploaded file for the worker, then show its progress."""
    user = await signed_in(request, "channels.import")
    form = await _form_in_memory(request)
    await check_csrf(request, user, form)
    account = str(form.get("account", "")).strip()[:32]
    check_channel(user, account, "channels.import")
    template = str(form.get("template", "")).strip()[:16] or None
    upload = form.get("file")
    body = b""
    filename = ""
    if isinstance(upload, UploadFile):
        body = await upload.read(file_imports.MAX_BYTES + 1)
        filename = upload.filename or ""
    try:
        async with database(request).transaction() as session:
            import_id = await file_imports.submit(
                session,
                account=account,
                template=template,
                filename=filename,
                body=body,
                by=actor_name(user),
                source_ip=client_ip(request),
            )
    except OrdertallyError as exc:
        message = REFUSALS.get(str(exc.extra.get("field", "")), N_("The file was refused."))
        return await _form_page(request, user, error=say(request, message), status=exc.status)
    return RedirectResponse(f"/ui/imports/{import_id}", status_code=303)


class _InMemoryParts(MultiPartParser):
    """Multipart parts kept in memory up to the route's body limit: Starlette spools a part
    over 1 MB to a temporary file, which for an order file would put buyers' cells on disk in
    clear before they are sealed (issue 14)."""

    spool_max_size = UPLOAD_BODY_BYTES


async def _form_in_memory(request: Request) -> FormData:
    """The upload form, parsed without touching disk (any other body: Starlette's parser)."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await request.form()
    try:
        return await _InMemoryParts(
            request.headers, request.stream(), max_files=1, max_fields=16, max_part_size=64 * 1024
        ).parse()
    except MultiPartException as exc:
        raise HTTPException(status_code=400, detail=exc.message) from exc


async def _import_of(request: Request, user: SignedIn, import_id: int, **options: Any) -> Any:
    async with database(request).transaction(write=False) as session:
        try:
            found = await file_imports.get(session, import_id, **options)
        except FileImportNotFound:
            return None
    check_channel(user, found.account, "channels.import")
    return found


@router.get("/ui/imports/{import_id}")
async def import_progress(request: Request, import_id: int) -> Response:
    """One import: its progress bar (htmx refreshes it while it runs), then its outcome."""
    user = await signed_in(request, "channels.import")
    found = await _import_of(request, user, import_id)
    if found is None:
        context = pages._common(request, user, reason="import_missing", permission=None)
        return render(request, "forbidden.html", context, status=404)
    share = None
    if found.total_rows:
        share = min(100, round(found.rows * 100 / found.total_rows))
    elif found.state == "done":
        share = 100
    context = pages._common(
        request,
        user,
        active="channels",
        job=found,
        share=share,
        may_see_personal_data=may_see_personal_data(user),
        state_labels=STATE_LABELS,
        templates=TEMPLATE_LABELS,
    )
    block = "progress" if request.headers.get("hx-target") == "import-progress" else None
    return render(request, "file_import.html", context, block=block)


@router.get("/ui/imports/{import_id}/rejected.csv")
async def rejected_rows(request: Request, import_id: int) -> Response:
    """The rejected rows with their reasons (CSV, UTF-8 with BOM for Excel): buyers' cells
    masked, in clear only on request for a role that may see personal data (logged)."""
    user = await signed_in(request, "channels.import")
    found = await _import_of(request, user, import_id, with_report=True)
    if found is None or not found.report:
        return Response(status_code=404)
    personal_data = request.query_params.get("personal") == "1" and may_see_personal_data(user)
    async with database(request).transaction(write=False) as session:
        report = await file_imports.rejected_report(session, found, personal_data=personal_data)
    if report is None:
        return Response(status_code=404)
    if personal_data:
        log.info(
            "pii access: rejected rows of import %s by %s (%s) from %s",
            found.id,
            actor_name(user),
            user.role,
            client_ip(request),
        )
    stem = found.filename.rsplit(".", 1)[0] or "import"
    return Response(
        report,
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="import-{found.id}.rejected.csv"; '
            f"filename*=UTF-8''{quote(stem, safe='')}.rejected.csv",
            "cache-control": "no-store",
        },
    )


def may_see_personal_data(user: SignedIn) -> bool:
    """The roles exports show buyers' personal data to in clear (not a warehouse-scoped user)."""
    return user.role in PII_ROLES and user.warehouses is None
