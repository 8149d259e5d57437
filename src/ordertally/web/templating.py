"""Jinja2 rendering: one environment per locale (the i18n extension holding that locale's
catalogue), whole pages or one block of a page for htmx partial updates."""

from __future__ import annotations

import functools
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse

from ordertally.web import i18n

TEMPLATES = Path(__file__).parent / "templates"
STATIC_VERSION = "5"
# Nothing may load from another host; htmx and ECharts set inline styles.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


@functools.cache
def environment(locale: str) -> Environment:
    """The Jinja2 environment of a locale."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        extensions=["jinja2.ext.i18n"],
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.install_gettext_translations(i18n.translations(locale), newstyle=True)  # type: ignore[attr-defined]
    env.filters["money"] = lambda minor, currency: i18n.fmt_money(minor, currency, locale)
    env.filters["time"] = lambda value: i18n.fmt_time(value, locale)
    env.filters["isotime"] = lambda value: i18n.fmt_time(
        datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None, locale
    )
    # JSON of facts and outcomes as people read it (Chinese kept, not \u-escaped).
    env.filters["facts"] = lambda value: orjson.dumps(value).decode()
    env.filters["number"] = lambda value: i18n.fmt_number(value, locale)
    env.filters["percent"] = lambda value: i18n.fmt_percent(value, locale)
    env.globals["locale"] = locale
    env.globals["html_lang"] = "zh-CN" if locale == "zh_CN" else "en"
    env.globals["zone"] = i18n.zone_name()
    env.globals["static_version"] = STATIC_VERSION
    return env


def render(
    request: Request,
    template: str,
    context: dict[str, Any],
    *,
    block: str | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """A page, or only `block` of it (an htmx partial)."""
    locale = i18n.pick_locale(request.cookies.get("ot_lang"))
    tmpl = environment(locale).get_template(template)
    ctx = {"request": request, **context}
    if block is not None:
        html = "".join(tmpl.blocks[block](tmpl.new_context(ctx)))
    else:
        html = tmpl.render(ctx)
    response = HTMLResponse(html, status_code=status, headers=headers)
    response.headers["content-security-policy"] = CSP
    response.headers["x-content-type-options"] = "nosniff"
    response.headers["referrer-policy"] = "same-origin"
    response.headers["cache-control"] = "no-store"
    return response
