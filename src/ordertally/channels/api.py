"""HTTP routes of the channels domain: accounts (secrets in, never out), sync status and
pull-now, SKU mappings, platform order files (uploaded, imported by the worker, polled, their
rejected rows downloaded); the platform webhooks live in `callbacks` (no API key, HMAC
instead)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from ordertally.auth.api import require
from ordertally.auth.service import PERMISSIONS, Principal
from ordertally.channels import callbacks, decrypt, file_imports, service, sync
from ordertally.channels.errors import NoRejectedRows, PersonalDataNotAllowed
from ordertally.channels.models import ChannelSkuMapping
from ordertally.channels.schemas import (
    AccountCreate,
    AccountList,
    AccountOut,
    AccountPatch,
    FileImportOut,
    SkuMappingIn,
    SkuMappingList,
    SkuMappingOut,
    SkuMappingPatch,
    SyncResultOut,
    SyncStatusOut,
)
from ordertally.core.db import Database
from ordertally.core.errors import Forbidden
from ordertally.core.http import client_ip

router = APIRouter(tags=["channels"])
router.include_router(callbacks.router)

api = APIRouter(prefix="/api/v1/channels")
log = logging.getLogger(__name__)

# The body limit of the order file upload (app.body_limits): the most the route reads, one
# byte over the largest file so that `file_imports.submit` refuses a larger one itself.
IMPORT_BODY_BYTES = file_imports.MAX_BYTES + 1
# The roles that see buyers' personal data in clear: the exports domain's PII_ROLES (those who
# may reveal an order's contact, but the warehouse), which this layer may not import.
PII_ROLES = PERMISSIONS["orders.contact"] - {"warehouse"}


def _db(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


def _own(principal: Principal, code: str | None) -> None:
    """Refuse a channel-scoped key another account's work (or work of no account)."""
    if not principal.may_act_for_channel(code):
        raise Forbidden(f"channel account {code or '(none)'} is outside this key's scope")


def _mapping(m: ChannelSkuMapping) -> dict[str, Any]:
    return {
        "id": m.id,
        "platform": m.platform,
        "account_code": m.account_code,
        "platform_sku": m.platform_sku,
        "sku": m.sku,
        "created_at": m.created_at,
        "updated_at": m.updated_at,
    }


@api.post("/accounts", response_model=AccountOut, status_code=201, summary="Add a channel account")
async def create_account(
    request: Request,
    body: AccountCreate,
    principal: Annotated[Principal, Depends(require("channels.manage"))],
) -> dict[str, Any]:
    """Secrets (credentials) are stored encrypted and never returned: see `has_credentials`."""
    _own(principal, body.code)
    async with _db(request).transaction() as session:
        account = await service.create_account(session, body)
        return service.account_view(account)


@api.get("/accounts", response_model=AccountList, summary="List channel accounts")
async def list_accounts(
    request: Request, principal: Annotated[Principal, Depends(require("channels.read"))]
) -> dict[str, Any]:
    """A channel-scoped key sees its own accounts only."""
    async with _db(request).transaction(write=False) as session:
        found = await service.list_accounts(session)
    return {
        "items": [service.account_view(a) for a in found if principal.may_act_for_channel(a.code)]
    }


@api.get("/accounts/{code}", response_model=AccountOut, summary="One channel account")
async def get_account(
    request: Request, code: str, principal: Annotated[Principal, Depends(require("channels.read"))]
) -> dict[str, Any]:
    _own(principal, code)
    async with _db(request).transaction(write=False) as session:
        return service.account_view(await service.get_account(session, code))


@api.patch("/accounts/{code}", response_model=AccountOut, summary="Change a channel account")
async def patch_account(
    request: Request,
    code: str,
    body: AccountPatch,
    principal: Annotated[Principal, Depends(require("channels.manage"))],
) -> dict[str, Any]:
    """Given credentials replace those of the same name; the others are kept."""
    _own(principal, code)
    async with _db(request).transaction() as session:
        return service.account_view(await service.update_account(session, code, body))


@api.get(
    "/accounts/{code}/status",
    response_model=SyncStatusOut,
    summary="Sync status: last success, lag, errors, empty streak",
)
async def account_status(
    request: Request, code: str, principal: Annotated[Principal, Depends(require("channels.read"))]
) -> dict[str, Any]:
    _own(principal, code)
    async with _db(request).transaction(write=False) as session:
        return await service.status_view(session, code)


@api.post("/{code}/sync", response_model=SyncResultOut, summary="Pull an account now")
async def sync_now(
    request: Request,
    code: str,
    principal: Annotated[Principal, Depends(require("channels.manage"))],
) -> dict[str, Any]:
    """Runs the pull in the request (pages are stored as they come); a platform error is
    answered as a problem (502, 429) after being recorded on the account's status."""
    _own(principal, code)
    outcome = await sync.sync_account(_db(request), code)
    return outcome.as_dict()


@api.post(
    "/sku-mappings", response_model=SkuMappingOut, status_code=201, summary="Map a platform SKU"
)
async def create_mapping(
    request: Request,
    body: SkuMappingIn,
    principal: Annotated[Principal, Depends(require("channels.manage"))],
) -> dict[str, Any]:
    _own(principal, body.account_code)
    async with _db(request).transaction() as session:
        return _mapping(await service.add_mapping(session, body))


@api.get("/sku-mappings", response_model=SkuMappingList, summary="List SKU mappings")
async def list_mappings(
    request: Request,
    principal: Annotated[Principal, Depends(require("channels.read"))],
    platform: Annotated[str | None, Query(max_length=16)] = None,
    account_code: Annotated[str | None, Query(max_length=32)] = None,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> dict[str, Any]:
    """A channel-scoped key sees the mappings of its own accounts only."""
    if account_code is not None:
        _own(principal, account_code)
    async with _db(request).transaction(write=False) as session:
        found = await service.list_mappings(session, platform, account_code, limit, after)
        return {
            "items": [_mapping(m) for m in found if principal.may_act_for_channel(m.account_code)]
        }


@api.get("/sku-mappings/{mapping_id}", response_model=SkuMappingOut, summary="One SKU mapping")
async def get_mapping(
    request: Request,
    mapping_id: int,
    principal: Annotated[Principal, Depends(require("channels.read"))],
) -> dict[str, Any]:
    async with _db(request).transaction(write=False) as session:
        mapping = await service.get_mapping(session, mapping_id)
        _own(principal, mapping.account_code)
        return _mapping(mapping)


@api.patch("/sku-mappings/{mapping_id}", response_model=SkuMappingOut, summary="Remap")
async def patch_mapping(
    request: Request,
    mapping_id: int,
    body: SkuMappingPatch,
    principal: Annotated[Principal, Depends(require("channels.manage"))],
) -> dict[str, Any]:
    async with _db(request).transaction() as session:
        _own(principal, (await service.get_mapping(session, mapping_id)).account_code)
        return _mapping(await service.update_mapping(session, mapping_id, body.sku))


@api.delete("/sku-mappings/{mapping_id}", status_code=204, summary="Delete a SKU mapping")
async def delete_mapping(
    request: Request,
    mapping_id: int,
    principal: Annotated[Principal, Depends(require("channels.manage"))],
) -> None:
    async with _db(request).transaction() as session:
        _own(principal, (await service.get_mapping(session, mapping_id)).account_code)
        await service.delete_mapping(session, mapping_id)


@api.post("/held-orders/replay", summary="Apply held platform orders again")
async def replay_held(
    request: Request,
    principal: Annotated[Principal, Depends(require("channels.manage"))],
    account: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """Apply again every webhook held by an `order_not_created` case (same as `ordertally
    channels replay`); what still cannot be created stays held. A channel-scoped key names
    one of its accounts."""
    _own(principal, account)
    outcomes = await callbacks.replay_failed(_db(request), account=account)
    return {"replayed": outcomes}


@api.post("/{code}/decrypt", summary="Decrypt the account's held recipients again")
async def decrypt_held(
    request: Request,
    code: Annotated[str, Path(max_length=32)],
    principal: Annotated[Principal, Depends(require("channels.manage"))],
) -> dict[str, Any]:
    """Ask the account's decrypt service again for its orders held `address_not_decrypted`
    (same as `ordertally channels decrypt ACCOUNT`); what is answered is stored and its hold
    resolved, the rest stays held."""
    _own(principal, code)
    return {"orders": await decrypt.retry_held(_db(request), code)}


@api.post(
    "/{code}/imports",
    response_model=FileImportOut,
    status_code=202,
    summary="Upload a platform order file (CSV or XLSX) for the worker to import",
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "text/csv": {"schema": {"type": "string", "format": "binary"}},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {
                    "schema": {"type": "string", "format": "binary"}
                },
            },
        }
    },
)
async def upload_file(
    request: Request,
    response: Response,
    code: Annotated[str, Path(max_length=32)],
    filename: Annotated[str, Query(min_length=1, max_length=500)],
    principal: Annotated[Principal, Depends(require("channels.import"))],
    template: Annotated[str | None, Query(max_length=100)] = None,
) -> dict[str, Any]:
    """The request body is the file's bytes as the platform exported it (any Content-Type, at
    most 20 MB); `filename` tells CSV from XLSX, `template` (douyin, jd, taobao, pinduoduo,
    generic, custom) is optional: the columns tell. The file is stored sealed and queued; poll
    `Location` until it is done. A file the account cannot take answers 422
    `channel.file_import_refused` (its `field`: file, template or account) and stores nothing.
    Importing the same file again creates nothing (the orders count as duplicates)."""
    _own(principal, code)
    body = await _body_up_to(request, IMPORT_BODY_BYTES)
    async with _db(request).transaction() as session:
        import_id = await file_imports.submit(
            session,
            account=code,
            template=template or None,
            filename=filename,
            body=body,
            by=principal.name,
            source_ip=client_ip(request),
        )
        found = await file_imports.get(session, import_id)
    response.headers["Location"] = f"/api/v1/channels/imports/{import_id}"
    return file_imports.view(found)


@api.get("/imports/{import_id}", response_model=FileImportOut, summary="One order file import")
async def get_file_import(
    request: Request,
    import_id: int,
    principal: Annotated[Principal, Depends(require("channels.import"))],
) -> dict[str, Any]:
    """Its state (queued, running, done, failed), progress and outcome counts; a
    channel-scoped key sees the imports of its own accounts only."""
    async with _db(request).transaction(write=False) as session:
        found = await file_imports.get(session, import_id)
    _own(principal, found.account)
    return file_imports.view(found)


@api.get(
    "/imports/{import_id}/rejected",
    summary="The rejected rows of an order file import, with their reasons (CSV)",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "UTF-8 CSV with a BOM"}},
)
async def rejected_rows(
    request: Request,
    import_id: int,
    principal: Annotated[Principal, Depends(require("channels.import"))],
    personal: Annotated[bool, Query()] = False,
) -> Response:
    """Each refused row as the file had it, with its line and reason. Buyers' names, phones
    and addresses are masked; `personal=1` shows them in clear to a role that may see personal
    data (else 403 `channel.personal_data_not_allowed`), and the access is logged. 404
    `channel.file_import_no_rejected_rows` while the import runs or when no row was refused."""
    if personal and not _may_see_personal_data(principal):
        raise PersonalDataNotAllowed(f"{principal.role} keys see buyers' personal data masked")
    async with _db(request).transaction(write=False) as session:
        found = await file_imports.get(session, import_id, with_report=True)
        _own(principal, found.account)
        report = await file_imports.rejected_report(session, found, personal_data=personal)
    if report is None:
        raise NoRejectedRows(f"file import {import_id} has no rejected rows ({found.state})")
    if personal:
        log.info(
            "pii access: rejected rows of import %s by %s (%s) from %s",
            found.id,
            principal.name,
            principal.role,
            client_ip(request),
        )
    return Response(
        report,
        media_type="text/csv; charset=utf-8",
        headers={
            "content-disposition": f'attachment; filename="import-{found.id}.rejected.csv"',
            "cache-control": "no-store",
        },
    )


async def _body_up_to(request: Request, limit: int) -> bytes:
    """The request body, read no further than `limit` bytes (the rest is left unread)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk[: limit - len(body)]
        if len(body) >= limit:
            break
    return bytes(body)


def _may_see_personal_data(principal: Principal) -> bool:
    """As for an export's file: a role that sees personal data, not scoped to warehouses."""
    return principal.role in PII_ROLES and principal.warehouses is None


router.include_router(api)
