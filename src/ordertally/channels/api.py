"""HTTP routes of the channels domain: accounts (secrets in, never out), sync status and
pull-now, SKU mappings; the platform webhooks live in `callbacks` (no API key, HMAC instead)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.channels import callbacks, decrypt, service, sync
from ordertally.channels.models import ChannelSkuMapping
from ordertally.channels.schemas import (
    AccountCreate,
    AccountList,
    AccountOut,
    AccountPatch,
    SkuMappingIn,
    SkuMappingList,
    SkuMappingOut,
    SkuMappingPatch,
    SyncResultOut,
    SyncStatusOut,
)
from ordertally.core.db import Database
from ordertally.core.errors import Forbidden

router = APIRouter(tags=["channels"])
router.include_router(callbacks.router)

api = APIRouter(prefix="/api/v1/channels")


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


router.include_router(api)
