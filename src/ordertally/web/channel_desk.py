"""The channels screen: accounts with their sync health, pull now, SKU mappings, and held
webhooks with replay. The channels domain's services do the work (a pull and a replay open
their own transactions, with no transaction held across a platform call)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.responses import Response

from ordertally.channels import callbacks as channel_callbacks
from ordertally.channels import service as channels_service
from ordertally.channels import sync as channel_sync
from ordertally.channels.schemas import SkuMappingIn
from ordertally.core.errors import OrdertallyError
from ordertally.web.i18n import N_
from ordertally.web.pages import _common, _error_text
from ordertally.web.security import (
    SignedIn,
    check_channel,
    check_csrf,
    database,
    may,
    signed_in,
)
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

MAPPINGS_SHOWN = 100
REPLAY_RESULTS: dict[str, str] = {
    "applied": N_("Applied"),
    "failed": N_("Still held"),
}


async def _context(request: Request, user: SignedIn, **extra: Any) -> dict[str, Any]:
    # The status view creates a missing sync state row: a write transaction.
    async with database(request).transaction() as session:
        # A channel-scoped user sees its own accounts' work only, as a scoped key does.
        accounts = [
            a
            for a in await channels_service.list_accounts(session)
            if user.may_act_for_channel(a.code)
        ]
        statuses = {a.code: await channels_service.status_view(session, a.code) for a in accounts}
        mappings = [
            m
            for m in await channels_service.list_mappings(session, None, None, MAPPINGS_SHOWN, 0)
            if user.may_act_for_channel(m.account_code)
        ]
        held = [
            h
            for h in await channel_callbacks.held_webhooks(session)
            if user.may_act_for_channel(h["account"])
        ]
    return _common(
        request,
        user,
        active="channels",
        # A page rendered after a POST switches language back to the screen itself.
        path="/ui/channels",
        query="",
        accounts=accounts,
        can_import=may(user, "channels.import"),
        statuses=statuses,
        mappings=mappings,
        held=held,
        can_manage=may(user, "channels.manage"),
        replay_labels=REPLAY_RESULTS,
        **(
            {"error": None, "error_field": "", "notice": None, "section": None, "replayed": None}
            | extra
        ),
    )


@router.get("/ui/channels")
async def channels_page(request: Request) -> Response:
    """Accounts and their sync health, SKU mappings, held webhooks."""
    user = await signed_in(request, "channels.read")
    return render(request, "channels.html", await _context(request, user))


@router.post("/ui/channels/{code}/sync")
async def pull_now(request: Request, code: str) -> Response:
    """Pull an account now (the platform is called with no transaction open)."""
    user = await signed_in(request, "channels.manage")
    await check_csrf(request, user)
    check_channel(user, code[:32], "channels.manage")
    try:
        outcome = await channel_sync.sync_account(database(request), code[:32])
    except OrdertallyError as exc:
        context = await _context(request, user, error=_error_text(exc), section="accounts")
        return render(request, "channels.html", context, status=exc.status)
    context = await _context(request, user, notice=outcome.as_dict(), section="accounts")
    return render(request, "channels.html", context)


@router.post("/ui/channels/mappings")
async def add_mapping(request: Request) -> Response:
    """Map a platform SKU to a catalogue SKU (for one account, or every account: empty)."""
    user = await signed_in(request, "channels.manage")
    await check_csrf(request, user)
    form = await request.form()
    fields = ("platform", "account_code", "platform_sku", "sku")
    values = {k: str(form.get(k, "")).strip()[:200] for k in fields}
    # A platform-wide mapping (no account) belongs to no scope.
    check_channel(user, values["account_code"] or None, "channels.manage")
    try:
        data = SkuMappingIn.model_validate(values)
        async with database(request).transaction() as session:
            await channels_service.add_mapping(session, data)
    except ValidationError as exc:
        field = str(exc.errors()[0]["loc"][0]) if exc.errors() else ""
        error = N_("Check the mapping: %(field)s is not valid.")
        context = await _context(
            request, user, error=error, error_field=field, section="mappings", form=values
        )
        return render(request, "channels.html", context, status=422)
    except OrdertallyError as exc:
        context = await _context(
            request, user, error=_error_text(exc), section="mappings", form=values
        )
        return render(request, "channels.html", context, status=exc.status)
    context = await _context(request, user, section="mappings")
    return render(request, "channels.html", context, status=201)


@router.post("/ui/channels/held/replay")
async def replay_held(request: Request) -> Response:
    """Apply every held webhook again (a channel-scoped user: its accounts' only); what the
    configuration still refuses stays held."""
    user = await signed_in(request, "channels.manage")
    await check_csrf(request, user)
    if user.channels is None:
        outcomes = await channel_callbacks.replay_failed(database(request))
    else:
        outcomes = []
        for account in user.channels:
            outcomes += await channel_callbacks.replay_failed(database(request), account=account)
    context = await _context(request, user, replayed=outcomes, section="held")
    return render(request, "channels.html", context)
