"""The exports and analytics screens over HTTP (both databases): finance starts an XLSX export,
follows its progress, downloads the file whose SHA-256 is the manifest's; personal data in
clear only for the roles allowed and with a reason, logged on the export's audit row; the
after-sales export template; the analytics screen shows the analytics domain's own figures
(stage table, ship time from the fulfilment start) for the merchant's days."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from ordertally.aftersales import service as aftersales_service
from ordertally.aftersales.schemas import CaseCreate
from ordertally.analytics import service as analytics_service
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.exports import service as exports_service
from ordertally.exports.models import ExportAudit
from tests.analytics.test_timeliness import _walk
from tests.factories import make_order
from tests.web.conftest import SignedInClient
from tests.web.helpers import count, csrf_of

pytestmark = pytest.mark.anyio
_EXPORT_NO = re.compile(r"/ui/exports/(EXP[0-9A-F]+)$")
T0 = datetime(2026, 11, 10, 2, 0, tzinfo=UTC)  # 10:00 in Asia/Shanghai
DAY = "2026-11-10"


async def _audits(db: Database) -> list[tuple[str, str, bool, str | None]]:
    async with db.transaction(write=False) as session:
        rows = await session.scalars(select(ExportAudit).order_by(ExportAudit.id))
        return [(e.actor_id, e.template, e.pii_unmasked, e.pii_reason) for e in rows.all()]


async def test_finance_exports_orders_as_xlsx_follows_it_and_downloads_the_manifested_file(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given three paid orders and finance on the exports screen
    for _ in range(3):
        await make_order(db, "paid")
    finance = await signed_in("finance")
    page = await finance.get("/ui/exports")
    assert page.status_code == 200
    # Then the form offers every built-in template, the after-sales ones included
    for name in ("orders", "aftersale_cases", "refunds"):
        assert f'<option value="{name}"' in page.text
    # And finance is not offered personal data in clear
    assert 'name="unmask_pii"' not in page.text and "data-masked" in page.text
    # When the template changes, htmx gets that template's filters alone
    filters = await finance.get(
        "/ui/exports?template=refunds",
        headers={"HX-Request": "true", "HX-Target": "export-filters"},
    )
    assert 'data-filter="source"' in filters.text and "<form" not in filters.text
    # When finance starts an XLSX export of paid orders
    started = await finance.post(
        "/ui/exports",
        data={
            "csrf_token": csrf_of(page.text),
            "template": "orders",
            "format": "xlsx",
            "f_status": "paid",
            "timezone": "Asia/Shanghai",
        },
    )
    assert started.status_code == 303
    match = _EXPORT_NO.search(started.headers["location"])
    assert match
    export_no = match.group(1)
    # Then its page polls while it is queued
    queued = await finance.get(f"/ui/exports/{export_no}")
    assert 'data-export-state="queued"' in queued.text and 'hx-trigger="every 1s"' in queued.text
    assert 'data-action="download"' not in queued.text
    # When the worker runs it / Then the polled block shows it done with its manifest
    assert await exports_service.run_queued(db) == 1
    block = await finance.get(
        f"/ui/exports/{export_no}", headers={"HX-Request": "true", "HX-Target": "export-progress"}
    )
    assert 'data-export-state="done"' in block.text and "every 1s" not in block.text
    assert '<dd data-manifest="row_count">3</dd>' in block.text
    # And the downloaded file's SHA-256 is the manifest's, as is the manifest download
    file = await finance.get(f"/ui/exports/{export_no}/file")
    assert file.status_code == 200
    assert file.headers["content-type"].startswith("application/vnd.openxmlformats")
    digest = hashlib.sha256(file.content).hexdigest()
    manifest = (await finance.get(f"/ui/exports/{export_no}/manifest")).json()
    assert manifest["file_sha256"] == digest and manifest["row_count"] == 3
    assert f'data-manifest="file_sha256">{digest}<' in block.text
    # And the history names who asked, from where, and the digest
    history = await finance.get("/ui/exports")
    row = re.search(rf'<tr data-export="{export_no}">(.*?)</tr>', history.text, re.S)
    assert row and "user:finance-1" in row.group(1) and digest[:16] in row.group(1)
    assert await _audits(db) == [("user:finance-1", "orders", False, None)]


async def test_personal_data_in_clear_only_for_the_roles_allowed_with_a_reason(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an order, finance and cs
    await make_order(db, "paid")
    finance = await signed_in("finance")
    cs = await signed_in("cs")
    body = {
        "template": "orders",
        "format": "csv",
        "unmask_pii": "1",
        "pii_reason": "客户投诉核对地址",
    }
    # When finance posts an unmasked export anyway / Then it is refused and nothing is written
    page = (await finance.get("/ui/exports")).text
    refused = await finance.post("/ui/exports", data={"csrf_token": csrf_of(page), **body})
    assert refused.status_code == 403 and "您的角色不能导出明文个人信息" in refused.text
    # And cs without a reason is refused too
    page = (await cs.get("/ui/exports")).text
    assert 'name="unmask_pii"' in page
    no_reason = await cs.post(
        "/ui/exports", data={"csrf_token": csrf_of(page), **body, "pii_reason": ""}
    )
    assert no_reason.status_code == 422
    # And a post without the token is refused
    assert (await cs.post("/ui/exports", data=body)).status_code == 403
    assert await count(db, ExportAudit) == 0
    # When cs gives the reason / Then the export is in clear and its audit row logs the access
    made = await cs.post("/ui/exports", data={"csrf_token": csrf_of(page), **body})
    assert made.status_code == 303
    assert await _audits(db) == [("user:cs-2", "orders", True, "客户投诉核对地址")]
    export_no = made.headers["location"].rsplit("/", 1)[1]
    await exports_service.run_queued(db)
    # And finance may not download it, cs may
    assert (await finance.get(f"/ui/exports/{export_no}/file")).status_code == 403
    file = await cs.get(f"/ui/exports/{export_no}/file")
    assert file.status_code == 200 and "13812345678" in file.content.decode("utf-8-sig")


async def test_the_aftersales_template_exports_every_case_with_its_refund(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given two refund-only cases on a paid order (12.30 and 7.70)
    order = await make_order(db, "paid")
    for amount in ("12.30", "7.70"):
        async with db.transaction() as session:
            await aftersales_service.open_case(
                session,
                CaseCreate.model_validate(
                    {
                        "order_no": order.order_no,
                        "type": "refund_only",
                        "reason_code": "late",
                        "refund_goods": amount,
                    }
                ),
                "cs-1",
            )
    ops = await signed_in("ops")
    page = (await ops.get("/ui/exports")).text
    # When ops exports the after-sales cases as CSV
    made = await ops.post(
        "/ui/exports",
        data={"csrf_token": csrf_of(page), "template": "aftersale_cases", "format": "csv"},
    )
    export_no = made.headers["location"].rsplit("/", 1)[1]
    await exports_service.run_queued(db)
    # Then the manifest counts both and sums the refunds, as the database does
    manifest = (await ops.get(f"/ui/exports/{export_no}/manifest")).json()
    assert (manifest["row_count"], manifest["sums"]) == (2, {"CNY": "20.00"})
    async with db.transaction(write=False) as session:
        export = await exports_service.get_export(session, export_no)
        assert await exports_service.database_aggregates(session, export) == {
            "row_count": 2,
            "sums": {"CNY": "20.00"},
        }
    text = (await ops.get(f"/ui/exports/{export_no}/file")).content.decode("utf-8-sig")
    assert text.count(order.order_no) == 2 and "refund_only" in text


async def test_the_analytics_screen_shows_the_domains_figures_for_the_merchants_days(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given two orders created at 10:00 Beijing time on 2026-11-10, one paid 30 min later and
    # shipped, the other paid 2 h later (the consumers have seen their events)
    for paid_after, channel in ((0.5, "jd"), (2.0, "douyin")):
        with clock.frozen(T0):
            order = await make_order(db, channel=channel)
        t = T0 + timedelta(hours=paid_after)
        await _walk(
            db,
            order.order_no,
            [
                ("payment_succeeded", t),
                ("allocate", t + timedelta(hours=1)),
                ("start_fulfillment", t + timedelta(hours=2)),
                ("ship", t + timedelta(hours=4)),
            ],
        )
    await drain(db, get_settings())
    finance = await signed_in("finance")
    # When finance opens the screen for that day, per channel
    page = await finance.get(f"/ui/analytics?date_from={DAY}&date_to={DAY}&by=channel")
    assert page.status_code == 200
    # Then the stage table has the domain's rows, value for value
    async with db.transaction(write=False) as session:
        rows = await analytics_service.stage_table(
            session, datetime(2026, 11, 10).date(), datetime(2026, 11, 10).date(), "channel"
        )
    shown = re.findall(r'<tr data-stage="(\w+)" data-key="(\w+)">', page.text)
    assert shown == [(r["stage"], r["channel"]) for r in rows]
    assert ("pending_to_paid", "douyin") in shown and ("ship_time", "jd") in shown
    # And the KPIs: 2 orders, both paid; ship time p50 from the fulfilment start (4 h each)
    assert '<span class="kpi-value" data-kpi="orders">2</span>' in page.text
    assert 'data-kpi="ship_p50">4.0<' in page.text
    # And a day outside the range shows nothing
    empty = await finance.get("/ui/analytics?date_from=2026-11-11&date_to=2026-11-11")
    assert "data-stage=" not in empty.text
    assert '<span class="kpi-value" data-kpi="orders">0</span>' in empty.text
    # And the English switch shows English labels
    finance.cookies.set("ot_lang", "en")
    english = await finance.get(f"/ui/analytics?date_from={DAY}&date_to={DAY}&by=all")
    assert "Stage table" in english.text and "Created → paid" in english.text
