"""The batched ingest of platform after-sale records (`aftersales.batch`, through
`platforms.ingest`) writes what the per-record path (`platforms.ingest_each`) writes for the
same stream: cases, lines, audit rows, refund ledger rows, refunds, the orders' statuses and
audit rows, and the outbox; a bad record is refused with its reason without blocking the page;
two pullers of the same pages at once still open one case per refund id."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from ordertally.aftersales import platforms
from ordertally.aftersales.models import (
    AftersaleCase,
    AftersaleEvent,
    AftersaleLine,
    AftersaleMoney,
    AftersaleRefund,
)
from ordertally.core.db import Database
from ordertally.events.models import OutboxEvent
from ordertally.orders.models import OrderEvent, SalesOrder
from tests.factories import make_order

pytestmark = pytest.mark.anyio

BATCH, EACH = "pdd_batch", "pdd_each"
# Orders of each channel (same external ids): paid ones take refunds only; shipped, delivered
# and completed ones every type. 159.70 each (2 × TEA-LJ-250 at 59.90, 1 × CUP-CER-01).
STATUSES = ["paid", "shipped", "delivered", "completed", "shipped", "delivered", "paid", "shipped"]


def _stream(seed: int, n: int) -> list[dict[str, Any]]:
    """pdd.refund.list.increment.get-shaped items over the orders: every type, amounts that
    fit, that add up past what was paid, that are zero; SKUs the order has and one it has not;
    an order that is not ours; repeats of earlier refund ids."""
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    for i in range(n):
        if out and rng.random() < 0.12:
            out.append(dict(rng.choice(out)))
            continue
        k = rng.randrange(len(STATUSES) + 1)
        out.append(
            {
                "id": 5_000 + i,
                "order_sn": f"sn-{k}" if k < len(STATUSES) else "NOT-OURS",
                "after_sales_type": rng.choice((2, 2, 3, 3, 4, 5)),
                "refund_amount": rng.choice(("10.00", "59.90", "80.00", "159.70", "0.00")),
                "outer_id": rng.choice(("TEA-LJ-250", "TEA-LJ-250", "CUP-CER-01", "NOPE-1")),
                "goods_number": rng.choice((1, 1, 2, 3)),
                "after_sale_reason": rng.choice(("破损", "不想要了", "")),
            }
        )
    return out


async def _orders(db: Database, channel: str) -> None:
    for k, status in enumerate(STATUSES):
        await make_order(db, status, channel=channel, external_id=f"sn-{k}")


def _norm(value: Any, names: dict[str, str]) -> Any:
    """A value with channel names, order numbers and case numbers replaced by stable keys."""
    if isinstance(value, dict):
        return tuple(
            sorted(
                (k, _norm(v, names))
                for k, v in value.items()
                if k not in ("occurred_at", "case_id", "refund_id", "order_id")
            )
        )
    if isinstance(value, list | tuple):
        return tuple(_norm(v, names) for v in value)
    if isinstance(value, str):
        for old, new in names.items():
            value = value.replace(old, new)
    return value


async def _tables(db: Database, channel: str) -> dict[str, Counter[Any]]:
    """Everything the ingest wrote for one channel's orders, ids and times left out."""
    async with db.transaction(write=False) as session:
        orders = (
            await session.scalars(select(SalesOrder).where(SalesOrder.channel == channel))
        ).all()
        order_ids = [o.id for o in orders]
        names = {channel: "CH"} | {o.order_no: f"order:{o.external_id}" for o in orders}
        cases = (
            await session.scalars(select(AftersaleCase).where(AftersaleCase.channel == channel))
        ).all()
        names |= {c.case_no: f"case:{c.platform_refund_id}" for c in cases}
        case_key = {c.id: c.platform_refund_id for c in cases}
        case_ids = list(case_key)
        lines = (
            await session.scalars(select(AftersaleLine).where(AftersaleLine.case_id.in_(case_ids)))
        ).all()
        audit = (
            await session.scalars(
                select(AftersaleEvent).where(AftersaleEvent.case_id.in_(case_ids))
            )
        ).all()
        money = (
            await session.scalars(
                select(AftersaleMoney).where(AftersaleMoney.order_id.in_(order_ids))
            )
        ).all()
        refunds = (
            await session.scalars(
                select(AftersaleRefund).where(AftersaleRefund.order_id.in_(order_ids))
            )
        ).all()
        order_audit = (
            await session.scalars(
                select(OrderEvent).where(
                    OrderEvent.order_id.in_(order_ids), OrderEvent.actor_id == "sync"
                )
            )
        ).all()
        outbox = (await session.scalars(select(OutboxEvent))).all()
    external = {o.id: o.external_id for o in orders}
    row_names = set(names.values())

    def mine(event: OutboxEvent) -> bool:
        return _norm(event.aggregate_id, names) in row_names

    def n(value: Any) -> Any:
        return _norm(value, names)

    return {
        "cases": Counter(
            n(
                (
                    c.platform_refund_id,
                    external[c.order_id],
                    c.order_no,
                    c.type,
                    c.status,
                    c.version,
                    c.reason_code,
                    c.responsibility,
                    c.goods_status,
                    c.evidence,
                    c.buyer_message,
                    c.currency,
                    c.refund_goods_minor,
                    c.refund_postage_minor,
                    c.refund_other_minor,
                    c.created_by,
                )
            )
            for c in cases
        ),
        "lines": Counter(
            (case_key[ln.case_id], ln.line_no, ln.sku, ln.quantity, ln.received_quantity)
            for ln in lines
        ),
        "audit": Counter(
            n(
                (
                    case_key[e.case_id],
                    e.version,
                    e.event,
                    e.from_status,
                    e.to_status,
                    e.actor,
                    tuple(sorted(e.detail.items())),
                )
            )
            for e in audit
        ),
        "money": Counter(
            (external[m.order_id], m.paid_minor, m.committed_minor, m.refunded_minor) for m in money
        ),
        "refunds": Counter(
            n(
                (
                    case_key[r.case_id],
                    r.order_no,
                    r.source,
                    r.provider,
                    r.out_refund_no,
                    r.provider_refund_id,
                    r.amount_minor,
                    r.paid_total_minor,
                    r.state,
                    r.attempts,
                    r.next_at,
                    r.sent_at is not None,
                    r.confirmed_at is not None,
                )
            )
            for r in refunds
        ),
        "orders": Counter((o.external_id, o.status, o.version) for o in orders),
        "order_audit": Counter(
            n(
                (
                    external[e.order_id],
                    e.version,
                    e.event,
                    e.from_status,
                    e.to_status,
                    e.actor_kind,
                    e.evidence_ref,
                    e.note,
                )
            )
            for e in order_audit
        ),
        "outbox": Counter(
            (e.event_type, e.aggregate_type, n(e.aggregate_id), n(e.payload))
            for e in outbox
            if mine(e) and e.event_type.startswith(("Aftersale", "OrderRefunded", "OrderPartial"))
        ),
    }


async def _ingest(db: Database, items: list[dict[str, Any]], channel: str, page: int) -> Any:
    records = [platforms.from_pinduoduo(i, channel) for i in items]
    ingest = platforms.ingest if channel == BATCH else platforms.ingest_each
    totals = [0, 0, 0, 0]
    for start in range(0, len(records), page):
        async with db.transaction() as session:
            result = await ingest(session, records[start : start + page], "sync")
        for i, v in enumerate(
            (result.created, result.duplicates, result.unknown_order, len(result.refused))
        ):
            totals[i] += v
    return tuple(totals)


@pytest.mark.parametrize("seed", [18, 35])
async def test_the_batched_path_writes_what_the_per_record_path_writes(
    db: Database, seed: int
) -> None:
    # Given the same orders on two channels, and one stream of refund records
    for channel in (BATCH, EACH):
        await _orders(db, channel)
    items = _stream(seed, 120)
    # When it goes through the batched path on one and record by record on the other, in
    # pages of 25, then again
    first = {ch: await _ingest(db, items, ch, 25) for ch in (BATCH, EACH)}
    again = {ch: await _ingest(db, items, ch, 25) for ch in (BATCH, EACH)}
    # Then both counted the same outcomes, some of each kind, and nothing the second time
    assert first[BATCH] == first[EACH]
    created, duplicates, unknown, refused = first[BATCH]
    assert created > 20 and duplicates > 5 and unknown > 0 and refused > 5
    assert again[BATCH] == again[EACH] == (0, created + duplicates, unknown, refused)
    # And every table holds the same rows
    batch, each = await _tables(db, BATCH), await _tables(db, EACH)
    assert batch["cases"] and batch["outbox"] and batch["order_audit"]
    for table in batch:
        assert batch[table] == each[table], table


async def test_a_bad_record_is_refused_with_its_reason_and_the_page_goes_on(
    db: Database,
) -> None:
    # Given a paid order and a page with a refund it can take, one past what it paid, a
    # return on an order not yet shipped, and one for an order that is not ours
    await make_order(db, "paid", channel=BATCH, external_id="sn-0")
    items = [
        {"id": 1, "order_sn": "sn-0", "after_sales_type": 2, "refund_amount": "100.00"},
        {"id": 2, "order_sn": "sn-0", "after_sales_type": 2, "refund_amount": "100.00"},
        {
            "id": 3,
            "order_sn": "sn-0",
            "after_sales_type": 3,
            "refund_amount": "1.00",
            "outer_id": "TEA-LJ-250",
        },
        {"id": 4, "order_sn": "NOT-OURS", "after_sales_type": 2, "refund_amount": "1.00"},
        {"id": 5, "order_sn": "sn-0", "after_sales_type": 2, "refund_amount": "59.70"},
    ]
    records = [platforms.from_pinduoduo(i, BATCH) for i in items]
    async with db.transaction() as session:
        result = await platforms.ingest(session, records, "sync")
    # Then the good ones are cases, the bad ones refused with why
    assert (result.created, result.unknown_order) == (2, 1)
    reasons = dict(result.refused)
    assert sorted(reasons) == ["2", "3"]
    assert "would pass what was paid" in reasons["2"]
    assert "cannot be opened on an order that is paid" in reasons["3"]
    async with db.transaction(write=False) as session:
        money = (await session.scalars(select(AftersaleMoney))).one()
    assert (money.paid_minor, money.committed_minor, money.refunded_minor) == (
        15970,
        15970,
        15970,
    )


async def test_two_pullers_of_the_same_pages_open_one_case_per_refund_id(db: Database) -> None:
    # Given orders and a stream
    await _orders(db, BATCH)
    items = _stream(7, 150)
    records = [platforms.from_pinduoduo(i, BATCH) for i in items]
    distinct = {r.platform_refund_id for r in records}

    async def pull() -> list[int]:
        created = []
        for start in range(0, len(records), 30):
            async with db.transaction() as session:
                result = await platforms.ingest(session, records[start : start + 30], "sync")
            created.append(result.created)
        return created

    # When two pullers ingest the same pages at the same time
    a, b = await asyncio.gather(pull(), pull())
    # Then each refund id became at most one case, the two together created each once, and
    # no order is refunded past what it paid
    async with db.transaction(write=False) as session:
        cases = (await session.scalars(select(AftersaleCase))).all()
        refunds = (await session.scalars(select(AftersaleRefund))).all()
        money = (await session.scalars(select(AftersaleMoney))).all()
    ids = [c.platform_refund_id for c in cases]
    assert len(ids) == len(set(ids)) == sum(a) + sum(b) and set(ids) <= distinct
    assert len({r.out_refund_no for r in refunds}) == len(refunds)
    assert all(m.committed_minor == m.refunded_minor <= m.paid_minor for m in money)
    assert {m.order_id: m.refunded_minor for m in money} == {
        oid: sum(r.amount_minor for r in refunds if r.order_id == oid)
        for oid in {r.order_id for r in refunds}
    }
