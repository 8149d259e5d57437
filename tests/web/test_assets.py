"""What the back office ships: every message translated in both catalogues (compiled from the
committed .po files, so no binary can drift), vendored assets with their licences and within
the weight budget, and no template pointing at another host."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest

from ordertally.web import catalogue, i18n, templating
from ordertally.web.wiring import STATIC

VENDOR = STATIC / "vendor"
# The heaviest page (the dashboard) loads these; the budget is what travels (gzip).
DASHBOARD_ASSETS = [
    "vendor/pico-2.1.1/pico.min.css",
    "app.css",
    "vendor/htmx-2.0.11/htmx.min.js",
    "vendor/echarts-6.1.0/echarts.simple.min.js",
    "dashboard.js",
    "favicon.svg",
]
# The analytics screen loads the same kit with its own charts script.
ANALYTICS_ASSETS = [a if a != "dashboard.js" else "analytics.js" for a in DASHBOARD_ASSETS]
BUDGET = 300 * 1024


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_every_message_is_translated(locale: str) -> None:
    # Given the messages the templates and the web code use
    used = catalogue.extracted()
    assert len(used) > 100
    # Then the locale's catalogue translates each of them
    assert catalogue.missing(locale) == []


@pytest.mark.parametrize("locale", i18n.LOCALES)
def test_the_committed_catalogues_are_up_to_date(locale: str) -> None:
    # `python -m ordertally.web.catalogue` would write exactly the committed file
    assert catalogue.render(locale) == i18n.po_path(locale).read_bytes()


def test_the_catalogues_compile_and_translate() -> None:
    # When the committed catalogues are compiled in memory
    zh = i18n.translations("zh_CN")
    en = i18n.translations("en")
    # Then they translate, with placeholders kept
    assert zh.gettext("Orders") == "订单"
    assert en.gettext("Orders") == "Orders"
    assert zh.gettext("Times in %(zone)s") % {"zone": "Asia/Shanghai"} == (
        "时间均为 Asia/Shanghai 时区"
    )


def test_money_keeps_the_currency_digits() -> None:
    assert i18n.fmt_money(15970, "CNY", "zh_CN") == "¥159.70"
    assert i18n.fmt_money(1500, "JPY", "en") == "¥1,500"
    assert i18n.fmt_money(12345, "BHD", "en") == "BHD12.345"


def test_vendored_assets_carry_their_licences() -> None:
    for folder in ("htmx-2.0.11", "pico-2.1.1", "echarts-6.1.0"):
        names = {p.name for p in (VENDOR / folder).iterdir()}
        assert any(n.startswith("LICENSE") for n in names), folder


@pytest.mark.parametrize(
    "assets", [DASHBOARD_ASSETS, ANALYTICS_ASSETS], ids=["dashboard", "analytics"]
)
def test_the_heaviest_pages_stay_within_the_asset_budget(assets: list[str]) -> None:
    sizes = {a: len(gzip.compress((STATIC / a).read_bytes(), 6)) for a in assets}
    assert sum(sizes.values()) <= BUDGET, sizes


def test_no_template_or_static_file_names_another_host() -> None:
    external = re.compile(r"(src|href|url)\s*[=(]\s*[\"']?(https?:)?//", re.IGNORECASE)
    scripts = [STATIC / "dashboard.js", STATIC / "analytics.js"]
    for path in [*templating.TEMPLATES.glob("*.html"), STATIC / "app.css", *scripts]:
        assert not external.search(Path(path).read_text()), path
