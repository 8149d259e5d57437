"""The SLA clock with a frozen clock: a case's warning, breach and escalation each fire once at
their time, and the breach reaches a real local webhook (Apprise JSON) and SMTP server as a
card naming the order, type, age and owner."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from ordertally.casework import sla
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.metrics import CASES_OPEN
from ordertally.notify import service as notify_service
from ordertally.ops import doctor, metrics
from tests.factories import make_order
from tests.notify.conftest import Mailbox, Receiver, configure, mailbox, receiver

pytestmark = pytest.mark.anyio
__all__ = ["mailbox", "receiver"]  # fixtures, imported to be used here

T0 = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)


async def test_breach_fires_once_at_its_due_time_through_webhook_and_email(
    db: Database, receiver: Receiver, mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the ops channels ask for breaches and escalations, and a double payment case
    # (SLA 4 h, warning 1 h before, escalation to admin after 8 h) opened at T0
    configure(
        monkeypatch,
        ops=[
            {"name": "hook", "url": receiver.apprise_url(), "events": ["CaseSlaBreached"]},
            {
                "name": "mail",
                "url": f"mailto://127.0.0.1:{mailbox.port}?mode=insecure"
                "&from=ot@shop.example&to=finance@shop.example",
                "events": ["CaseSlaBreached", "CaseEscalated"],
            },
        ],
    )
    order = await make_order(db, "paid")
    with clock.frozen(T0):
        async with db.transaction() as session:
            case_id = await exceptions_service.open_case(
                session,
                order_id=order.id,
                category="payment",
                type="double_payment",
                blocking=False,
                detail={},
            )
    fired: list[dict[str, int]] = []
    # When the clock ticks before, at and after the due time (twice at each moment)
    for at in (
        T0 + timedelta(hours=2),
        T0 + timedelta(hours=3, minutes=1),
        T0 + timedelta(hours=3, minutes=59),
        T0 + timedelta(hours=4, minutes=1),
        T0 + timedelta(hours=4, minutes=2),
        T0 + timedelta(hours=8, minutes=1),
    ):
        with clock.frozen(at):
            fired.append(await sla.tick(db, at))
            fired.append(await sla.tick(db, at))
    # Then each clock fired exactly once, at its moment
    assert [sum(f.values()) for f in fired] == [1, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0]
    assert [next(k for k, v in f.items() if v) for f in fired if sum(f.values())] == [
        "opened",
        "warned",
        "breached",
        "escalated",
    ]
    # And the senders deliver one breach to the webhook, a breach and an escalation by email
    with clock.frozen(T0 + timedelta(hours=8, minutes=2)):
        result = await notify_service.send_due(db)
    assert (result.claimed, result.sent) == (3, 3)
    assert len(receiver.received) == 1
    card = receiver.received[0]
    assert card["title"].startswith(f"【已超时 SLA breached】#{case_id} 重复支付")
    assert f"订单 Order: **{order.order_no}**" in card["message"]
    assert "已开 Age: 4h01m" in card["message"]
    assert "负责 Owner: finance" in card["message"]
    assert f"/api/v1/cases/{case_id})" in card["message"]
    assert sorted(s.split("】")[0] for s in mailbox.subjects()) == [
        "【已升级 Escalated",
        "【已超时 SLA breached",
    ]
    # And the case shows it escalated to admin, with every notice in its log
    async with db.transaction(write=False) as session:
        case = await exceptions_service.get_case(session, case_id)
        log = await exceptions_service.logs_of(session, [case_id])
    assert (case.status, case.owner_role) == ("escalated", "admin")
    assert [(x.action, x.detail.get("event"), x.detail.get("messages")) for x in log] == [
        ("opened", None, None),
        ("notified", "CaseSlaBreached", 2),
        ("escalated", None, None),
        ("notified", "CaseEscalated", 1),
    ]


async def test_doctor_and_gauge_see_breached_and_open_cases(db: Database) -> None:
    # Given a stale tracking case (SLA 24 h) opened at T0
    order = await make_order(db, "paid")
    with clock.frozen(T0):
        async with db.transaction() as session:
            await exceptions_service.open_case(
                session,
                order_id=order.id,
                category="fulfillment",
                type="tracking_stale",
                blocking=False,
                detail={},
            )
    # Then the doctor passes before its due time and fails after, naming it
    checks = {}
    for hours in (23, 25):
        with clock.frozen(T0 + timedelta(hours=hours)):
            found = {c.name: c for c in await doctor.run_checks(db, get_settings())}
        checks[hours] = found["breached_cases"]
    assert (checks[23].ok, checks[23].data["count"]) == (True, 0)
    assert (checks[25].ok, checks[25].data["count"]) == (False, 1)
    # And the gauge counts it among the open cases of its type
    await metrics.refresh_gauges(db)
    assert CASES_OPEN.labels("tracking_stale", "open")._value.get() == 1
