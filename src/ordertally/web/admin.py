"""The settings screen: API keys (list, revoke), notification targets with a test send, and FX
rates. Each section shows only to the roles of its permission, each write checks the role and
the CSRF token; the auth, notify and orders services do the work."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import RedirectResponse, Response

from ordertally.auth import service as auth_service
from ordertally.core.errors import OrdertallyError
from ordertally.core.settings import get_settings
from ordertally.notify import service as notify_service
from ordertally.notify import targets as notify_targets
from ordertally.notify import templates as notify_templates
from ordertally.orders import fx
from ordertally.web.i18n import N_
from ordertally.web.pages import _common, _error_text, _parse_moment
from ordertally.web.security import (
    PageForbidden,
    SignedIn,
    check_csrf,
    database,
    may,
    signed_in,
)
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

SECTIONS = ("auth.manage", "notify.manage", "fx.manage")
FLASHES: dict[str, str] = {
    "revoked": N_("The API key was revoked."),
    "rate_set": N_("The rate was recorded."),
}


async def _settings_user(request: Request) -> SignedIn:
    """A signed-in user who may manage at least one section of the screen."""
    user = await signed_in(request, "orders.read")
    if not any(may(user, p) for p in SECTIONS):
        raise PageForbidden(user, "auth.manage")
    return user


def _targets() -> tuple[
    list[notify_targets.OpsTarget], notify_targets.SmsTarget | None, str | None
]:
    """The configured targets (never their URLs), or the configuration's error."""
    settings = get_settings()
    try:
        return notify_targets.ops_targets(settings), notify_targets.sms_target(settings), None
    except OrdertallyError as exc:
        return [], None, exc.detail


async def _context(request: Request, user: SignedIn, **extra: Any) -> dict[str, Any]:
    settings = get_settings()
    async with database(request).transaction(write=False) as session:
        keys = await auth_service.list_api_keys(session) if may(user, "auth.manage") else None
        rates = await fx.list_rates(session, settings) if may(user, "fx.manage") else None
        tests = (
            await notify_service.list_notifications(session, limit=200)
            if may(user, "notify.manage")
            else []
        )
    ops, sms, targets_error = _targets() if may(user, "notify.manage") else ([], None, None)
    return _common(
        request,
        user,
        active="settings",
        # A page rendered after a POST switches language back to the screen itself.
        path="/ui/settings",
        query="",
        keys=keys,
        rates=rates,
        base_currency=settings.base_currency,
        setting_rates=sorted(settings.fx_rates.items()),
        can_targets=may(user, "notify.manage"),
        ops_targets=ops,
        sms=sms,
        targets_error=targets_error,
        tests=[n for n in tests if n.event_type == notify_templates.TEST_EVENT][:10],
        settings_flash=FLASHES.get(request.query_params.get("done", "")),
        **({"error": None, "test_result": None, "section": None} | extra),
    )


@router.get("/ui/settings")
async def settings_page(request: Request) -> Response:
    """API keys, notification targets and FX rates, by role."""
    user = await _settings_user(request)
    return render(request, "settings.html", await _context(request, user))


@router.post("/ui/settings/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: int) -> Response:
    """Revoke an API key at once, on every process."""
    user = await signed_in(request, "auth.manage")
    await check_csrf(request, user)
    try:
        async with database(request).transaction() as session:
            await auth_service.revoke_api_key(session, key_id)
    except OrdertallyError as exc:
        context = await _context(request, user, error=_error_text(exc), section="keys")
        return render(request, "settings.html", context, status=exc.status)
    return RedirectResponse("/ui/settings?done=revoked", status_code=303)


@router.post("/ui/settings/notify/test")
async def test_send(request: Request) -> Response:
    """Send a test message to one configured target now (no transaction open while sending)."""
    user = await signed_in(request, "notify.manage")
    await check_csrf(request, user)
    form = await request.form()
    target = str(form.get("target", ""))[:100]
    phone = str(form.get("phone", "")).strip()[:32] or None
    try:
        row = await notify_service.send_test(database(request), target, phone=phone)
    except OrdertallyError as exc:
        context = await _context(request, user, error=_error_text(exc), section="notify")
        return render(request, "settings.html", context, status=exc.status)
    context = await _context(request, user, test_result=row, section="notify")
    return render(request, "settings.html", context)


@router.post("/ui/settings/fx")
async def set_rate(request: Request) -> Response:
    """Record an FX rate to the base currency, from a moment or now."""
    user = await signed_in(request, "fx.manage")
    await check_csrf(request, user)
    form = await request.form()
    currency = str(form.get("currency", "")).strip()[:3]
    rate = str(form.get("rate", "")).strip()[:40]
    effective = _parse_moment(str(form.get("effective_from", ""))[:40] or None, end=False)
    try:
        async with database(request).transaction() as session:
            await fx.set_rate(
                session,
                get_settings(),
                currency,
                rate,
                effective_from=effective,
                by=f"user:{user.username}",
            )
    except OrdertallyError as exc:
        context = await _context(request, user, error=_error_text(exc), section="fx")
        return render(request, "settings.html", context, status=exc.status)
    return RedirectResponse("/ui/settings?done=rate_set", status_code=303)
