"""Wire the back office: its pages, its vendored static files (gzip-compressed, cached) and the
handlers that turn a missing session, a refused role or a refused CSRF token into pages."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from starlette.middleware.gzip import GZipMiddleware
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordertally.fulfillment import tracking_page
from ordertally.payments import service as payments_service
from ordertally.web import (
    admin,
    aftersales,
    analytics,
    batch_desk,
    case_desk,
    cases,
    channel_desk,
    exports,
    finance,
    import_desk,
    order_desk,
    pages,
    purchase_plans,
    review_desk,
    rules_desk,
    security,
    settings_desk,
    warehouse,
)
from ordertally.web.templating import render

STATIC = Path(__file__).parent / "static"


class _Cached:
    """Static files may be cached a day: their URLs carry a version."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_cached(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append(
                    (b"cache-control", b"public, max-age=86400")
                )
            await send(message)

        await self.app(scope, receive, send_cached)


async def _login_required(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, security.LoginRequired)
    target = security.login_url(exc.next_path)
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


async def _forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, security.PageForbidden)
    reason = "scope" if exc.scope else "role"
    context = pages._common(request, exc.user, reason=reason, permission=exc.permission)
    return render(request, "forbidden.html", context, status=403)


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    user = await security.current_user(request)
    context = pages._common(request, user, reason="csrf", permission=None)
    return render(request, "forbidden.html", context, status=403)


def register(app: FastAPI | None) -> None:
    """Wire the back office: the session purge job; with an app, the pages and static files."""
    from ordertally.auth import jobs  # noqa: F401  (@periodic registers the session purge)

    # The tracking page's "status is being verified" hint asks payments (fulfillment may not).
    tracking_page.register_verifying_check(payments_service.awaiting_notification)
    if app is None:
        return
    app.include_router(pages.router)
    app.include_router(order_desk.router)
    app.include_router(finance.router)
    app.include_router(warehouse.router)
    app.include_router(purchase_plans.router)
    app.include_router(admin.router)
    app.include_router(channel_desk.router)
    app.include_router(import_desk.router)
    app.include_router(cases.router)
    app.include_router(aftersales.router)
    app.include_router(exports.router)
    app.include_router(analytics.router)
    app.include_router(batch_desk.router)
    app.include_router(case_desk.router)
    app.include_router(rules_desk.router)
    app.include_router(review_desk.router)
    app.include_router(settings_desk.router)
    static = _Cached(GZipMiddleware(StaticFiles(directory=STATIC), minimum_size=512))
    app.mount("/ui/static", static, name="ui-static")
    app.add_exception_handler(security.LoginRequired, _login_required)
    app.add_exception_handler(security.PageForbidden, _forbidden)
    app.add_exception_handler(security.CsrfRefused, _csrf_refused)
