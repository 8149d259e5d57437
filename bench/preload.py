"""`python -m bench.preload --orders N --name DB`: a scratch PostgreSQL database filled with N
orders and everything they leave behind, by COPY (not the API), for the flat-with-data benches
(issue 21): `python -m bench.flat` and `python -m bench.soak`.

Two years of orders with statuses by age (the last days still on the road, older ones
completed, closed unpaid or refunded), their lines, audit rows (`order_event`), delivered
outbox events, consumers' dedupe rows for the last `dedupe_retention_days`, idempotency keys
of the orders created over the API, customers with their phone identity, profile and order
links, a payment and its inbox notification for each paid order, a shipment with its lines for
each shipped one, reservations, and a catalogue of SKUs stocked in three warehouses with the
receipts the stock ledger needs. By default (`--retention default`) only what the default
retention keeps is loaded, as in a deployment whose purges run: outbox events of the last
`outbox_retention_days`, idempotency keys of the last `idempotency_ttl_hours`. `--retention
none` loads them for every order: a deployment whose purges never ran, the worst case for index
depth (and a backlog the workers' purges start on at once: measure the soak on the default).

Each table's column list comes from its SQLAlchemy model (`Model.__table__.columns`): a column
added to a model and not produced here stops the load with its name, unless the database can
fill it (nullable or a server default). Ids are derived from the order id, so the worker
processes (`--processes`) generate and COPY their chunks without coordinating; sequences are
set after. The secondary indexes of the big tables are dropped before the COPY and built
after (`--keep-indexes` loads with them in place, to compare). A manifest (URL, PII key,
timings, rows and sizes per table) goes to bench/results/preload-DB.json.

Not loaded (the creation path does not touch them, or their consumers rebuild them): search
documents, analytics timelines and daily tallies, notifications, exception cases.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import multiprocessing
import os
import secrets
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
CHUNK = 10_000  # orders per task: one transaction of COPYs in one worker process
SPAN_DAYS = 730
ORDERS_PER_CUSTOMER = 2.5
SKUS = 500
WAREHOUSES = (
    ("PL-SH", "上海青浦仓", "上海市", "上海市", 31.15, 121.12),
    ("PL-GZ", "广州白云仓", "广东省", "广州市", 23.16, 113.27),
    ("PL-CD", "成都双流仓", "四川省", "成都市", 30.58, 103.95),
)
STOCK_ON_HAND = 1_000_000
API_SCOPE = "api_key:1"
# Consumers that keep a dedupe row for every order event (bench/preload writes theirs).
ORDER_CONSUMERS = ("customers.link_order", "search.index_order", "analytics.order_timeline")
CREATED_CONSUMERS = ("analytics.order_daily_tally",)
CHANNELS = (("wechat_mini", "", 55), ("jd", "JD", 20), ("pdd", "PDD", 15), ("douyin", "DY", 10))
PROVINCES = (
    ("上海市", "上海市", "浦东新区", "世纪大道"),
    ("北京市", "北京市", "朝阳区", "建国路"),
    ("广东省", "广州市", "天河区", "体育西路"),
    ("广东省", "深圳市", "南山区", "科技园路"),
    ("浙江省", "杭州市", "西湖区", "文三路"),
    ("江苏省", "南京市", "鼓楼区", "中山路"),
    ("四川省", "成都市", "武侯区", "人民南路"),
    ("湖北省", "武汉市", "洪山区", "珞喻路"),
)
SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
GIVEN = "伟芳娜秀英敏静丽强磊军洋勇艳杰娟涛明超霞平刚华建国志红玉海燕晓东春梅"

# (event, from, to, actor kind, outbox event type) along an order's life.
CREATE = ("create", None, "pending_payment", "api", "OrderCreated")
PAY = ("payment_succeeded", "pending_payment", "paid", "payment_callback", "OrderPaid")
TIMEOUT = ("payment_timeout", "pending_payment", "closed", "scheduler", "OrderClosed")
ALLOCATE = ("allocate", "paid", "allocated", "allocator", "OrderAllocated")
FULFIL = ("start_fulfillment", "allocated", "fulfilling", "warehouse", "OrderFulfillmentStarted")
SHIP = ("ship", "fulfilling", "shipped", "warehouse", "OrderShipped")
DELIVER = ("deliver", "shipped", "delivered", "carrier", "OrderDelivered")
COMPLETE = ("complete", "delivered", "completed", "scheduler", "OrderCompleted")
REFUND = ("refund", "paid", "refunded", "finance", "OrderRefunded")
PARTIAL = (
    "aftersale_partial_refund",
    "completed",
    "partially_refunded",
    "aftersales",
    "OrderPartiallyRefunded",
)
SHIPPED_PATH = (CREATE, PAY, ALLOCATE, FULFIL, SHIP)
PATHS = {
    "closed": (CREATE, TIMEOUT),
    "refunded": (CREATE, PAY, REFUND),
    "shipped": SHIPPED_PATH,
    "delivered": (*SHIPPED_PATH, DELIVER),
    "completed": (*SHIPPED_PATH, DELIVER, COMPLETE),
    "partially_refunded": (*SHIPPED_PATH, DELIVER, COMPLETE, PARTIAL),
}
# Hours from creation to each step (payment, then a day to ship, two more to deliver, a week
# to complete).
STEP_HOURS = {
    "create": 0.0,
    "payment_succeeded": 0.05,
    "payment_timeout": 0.5,
    "allocate": 0.06,
    "start_fulfillment": 6.0,
    "ship": 20.0,
    "deliver": 68.0,
    "complete": 236.0,
    "refund": 3.0,
    "aftersale_partial_refund": 300.0,
}

# The tables in load order (foreign keys point backwards) and the models they come from.
ORDER_TABLES = (
    "sales_order",
    "order_line",
    "order_event",
    "outbox",
    "processed_event",
    "idempotency_key",
    "customer_order",
    "payment",
    "payment_notification",
    "shipment",
    "shipment_line",
    "reservation",
)
CUSTOMER_TABLES = ("customer", "customer_identity", "customer_profile")
REFERENCE_TABLES = ("warehouse", "sku", "stock", "stock_movement")


def models() -> dict[str, Any]:
    """Table name -> SQLAlchemy Table, for every table the preload writes."""
    from ordertally.catalog.models import Sku
    from ordertally.customers.models import (
        Customer,
        CustomerIdentity,
        CustomerOrder,
        CustomerProfile,
    )
    from ordertally.events.models import OutboxEvent, ProcessedEvent
    from ordertally.fulfillment.models import Shipment, ShipmentLine
    from ordertally.idempotency.models import IdempotencyKey
    from ordertally.inventory.models import Reservation, Stock, StockMovement, Warehouse
    from ordertally.orders.models import OrderEvent, OrderLine, SalesOrder
    from ordertally.payments.models import Payment, PaymentNotification

    found = (
        SalesOrder, OrderLine, OrderEvent, OutboxEvent, ProcessedEvent, IdempotencyKey,
        CustomerOrder, Payment, PaymentNotification, Shipment, ShipmentLine, Reservation,
        Customer, CustomerIdentity, CustomerProfile, Warehouse, Sku, Stock, StockMovement,
    )  # fmt: skip
    return {m.__table__.name: m.__table__ for m in found}


class Columns:
    """A table's COPY column list, checked against its model: every value produced must be a
    column, and every column not produced must be one the database fills (nullable or with a
    server default). A model change the preload does not know stops it with the column's name."""

    def __init__(self, table: Any, produced: list[str]) -> None:
        names = [c.name for c in table.columns]
        unknown = sorted(set(produced) - set(names))
        if unknown:
            raise RuntimeError(f"bench.preload produces {table.name}.{unknown}: not in the model")
        missing = [
            c.name
            for c in table.columns
            if c.name not in produced and not c.nullable and c.server_default is None
        ]
        if missing:
            raise RuntimeError(
                f"{table.name} has NOT NULL columns bench.preload does not produce: {missing}"
            )
        self.table = table.name
        self.names = [n for n in names if n in produced]
        # itemgetter of two or more names returns the tuple in one C call.
        self.row: Callable[[dict[str, Any]], tuple[Any, ...]] = itemgetter(*self.names)


class Tables:
    """The Columns of each table, fixed by the first row produced for it."""

    def __init__(self) -> None:
        self.tables = models()
        self.columns: dict[str, Columns] = {}
        self.rows: dict[str, list[tuple[Any, ...]]] = {}

    def add(self, table: str, values: dict[str, Any]) -> None:
        cols = self.columns.get(table)
        if cols is None:
            cols = self.columns[table] = Columns(self.tables[table], list(values))
        self.rows.setdefault(table, []).append(cols.row(values))


# --- what one order leaves behind -----------------------------------------------------------


def phone_of(customer: int) -> str:
    """A mainland mobile number per customer id (7919 is prime to 10^9: no two alike)."""
    return f"13{(customer * 7919 + 123_456_789) % 10**9:09d}"


def name_of(customer: int) -> str:
    given = GIVEN[customer * 7 % len(GIVEN)] + GIVEN[customer * 13 % len(GIVEN)][: customer % 2]
    return SURNAMES[customer % len(SURNAMES)] + given


def customer_of(order: int, customers: int) -> int:
    """The buyer of an order id (spread like a hash, a few orders each)."""
    return (order * 2_654_435_761 + 97) % customers + 1


def status_by_age(rng: float, age_days: float) -> str:
    """An order's status from its age and a uniform number: recent ones still on the road."""
    if rng < 0.10:
        return "closed"
    if rng < 0.14:
        return "refunded"
    if age_days < 1:
        return "shipped"
    if age_days < 3:
        return "shipped" if rng < 0.5 else "delivered"
    if age_days < 10:
        return "delivered" if rng < 0.6 else "completed"
    return "partially_refunded" if rng < 0.16 else "completed"


class Context:
    """What every chunk shares: the time span, sizes, the cipher and its options."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from ordertally.core.crypto import get_cipher
        from ordertally.core.settings import get_settings

        self.cfg = cfg
        self.orders = cfg["orders"]
        self.customers = max(1, int(self.orders / ORDERS_PER_CUSTOMER))
        self.t1 = cfg["t1"]
        self.t0 = self.t1 - SPAN_DAYS * 86400
        settings = get_settings()
        self.keep_all = cfg["retention"] == "none"
        self.outbox_after = self.t1 - settings.outbox_retention_days * 86400
        self.dedupe_after = self.t1 - settings.dedupe_retention_days * 86400
        self.keys_after = self.t1 - settings.idempotency_ttl_hours * 3600
        self.inbox_after = self.t1 - settings.inbox_retention_days * 86400
        self.ttl = timedelta(hours=settings.idempotency_ttl_hours)
        self.cipher = get_cipher()


def _rand(n: int, salt: int) -> float:
    """A deterministic uniform number in [0, 1) per (n, salt): cheaper than a Random per row."""
    return ((n * 0x9E3779B1 + salt * 0x85EBCA77) & 0xFFFFFFFF) / 2**32


def customer_chunk(ctx: Context, tables: Tables, first: int, last: int) -> None:
    """Customers first..last-1 (ids from 1): the row, the phone identity, the profile."""
    at = datetime.fromtimestamp(ctx.t0, UTC)
    for c in range(first, last):
        phone = phone_of(c)
        masked = f"{phone[:3]}****{phone[-4:]}"
        name = name_of(c)
        tables.add(
            "customer",
            {
                "id": c,
                "name_masked": name[0] + "*" * (len(name) - 1),
                "phone_masked": masked,
                "merged_into_id": None,
                "created_at": at,
                "updated_at": at,
            },
        )
        tables.add(
            "customer_identity",
            {
                "id": c,
                "customer_id": c,
                "kind": "phone_bidx",
                "value": ctx.cipher.blind_index(f"+86{phone}", "phone"),
                "platform": "",
                "masked": masked,
                "created_at": at,
            },
        )
        tables.add(
            "customer_profile",
            {
                "customer_id": c,
                "orders_90d": 0,
                "spend_90d_minor": 0,
                "aov_90d_minor": 0,
                "currency": "CNY",
                "returns_30d": 0,
                "channels": "[]",
                "favourite_categories": "[]",
                "risk_flags": "[]",
                "last_order_at": at,
                "next_ageing_at": None,
                "computed_at": at,
            },
        )


def order_chunk(ctx: Context, tables: Tables, first: int, last: int) -> None:
    """Orders first..last-1 (ids from 1) and every row they leave behind."""
    import orjson

    from ordertally.core.crypto import seal_body
    from ordertally.orders.contact import PII_ADDRESS, PII_NAME, PII_PHONE
    from ordertally.payments.inbox import body_key

    cipher = ctx.cipher
    span = ctx.t1 - ctx.t0
    for o in range(first, last):
        ts = ctx.t0 + span * (o - 0.5) / ctx.orders
        created = datetime.fromtimestamp(ts, UTC)
        age_days = (ctx.t1 - ts) / 86400
        status = status_by_age(_rand(o, 1), age_days)
        path = PATHS[status]
        c = customer_of(o, ctx.customers)
        phone = phone_of(c)
        stored_phone = f"+86{phone}"
        name = name_of(c)
        province, city, district, street = PROVINCES[c % len(PROVINCES)]
        channel, prefix, _ = CHANNELS[int(_rand(o, 2) * 100) % 4 if _rand(o, 3) < 0.45 else 0]
        external = f"{prefix}{o:015d}" if prefix else None
        order_no = f"PL{created:%y%m%d}{o:012d}"
        n_lines = 1 + int(_rand(o, 4) * 2.4)
        lines = []
        for n in range(1, n_lines + 1):
            sku_index = int(_rand(o, 10 + n) * SKUS)
            quantity = 1 + int(_rand(o, 20 + n) * 2.2)
            price = 990 + int(_rand(o, 30 + n) * 40_000)
            lines.append((o * 4 + n, n, sku_index, quantity, price))
        subtotal = sum(q * p for *_, q, p in lines)
        address = {
            "name": name,
            "phone": stored_phone,
            "province": province,
            "city": city,
            "district": district,
            "line1": f"{street}{o % 997 + 1}号",
            "postal_code": "200000",
        }
        at = {step[0]: created + timedelta(hours=STEP_HOURS[step[0]]) for step in path}
        updated = max(at.values())
        masked_phone = f"{phone[:3]}****{phone[-4:]}"
        masked_name = name[0] + "*" * (len(name) - 1)
        tables.add(
            "sales_order",
            {
                "id": o,
                "order_no": order_no,
                "channel": channel,
                "external_id": external,
                "status": status,
                "version": len(path),
                "currency": "CNY",
                "subtotal_minor": subtotal,
                "discount_minor": 0,
                "total_minor": subtotal,
                "base_currency": "CNY",
                "fx_rate": "1",
                "shipping_minor": 0,
                "tax_minor": 0,
                "fee_minor": 0,
                "base_total_minor": subtotal,
                "customer_name_enc": cipher.encrypt(name, PII_NAME),
                "customer_name_masked": masked_name,
                "customer_phone_enc": cipher.encrypt(stored_phone, PII_PHONE),
                "customer_phone_bidx": cipher.blind_index(stored_phone, "phone"),
                "customer_phone_masked": masked_phone,
                "customer_phone_last4": phone[-4:],
                "shipping_address_enc": cipher.encrypt(orjson.dumps(address).decode(), PII_ADDRESS),
                "ship_name_masked": masked_name,
                "ship_phone_masked": masked_phone,
                "ship_province": province,
                "ship_city": city,
                "ship_district": district,
                "fingerprint": hashlib.sha256(b"%d" % o).hexdigest(),
                "created_by": "api_key:1" if channel == "wechat_mini" else f"channel:{channel}",
                "payment_deadline_at": created + timedelta(minutes=30),
                "waybill_nos": "",
                "created_at": created,
                "updated_at": updated,
                "sub_status": None,
                "remark": None,
            },
        )
        for line_id, n, sku_index, quantity, price in lines:
            tables.add(
                "order_line",
                {
                    "id": line_id,
                    "order_id": o,
                    "line_no": n,
                    "sku": f"PL-SKU-{sku_index:04d}",
                    "quantity": quantity,
                    "unit_price_minor": price,
                    "discount_minor": 0,
                    "total_minor": quantity * price,
                    "sku_name": f"预载商品 {sku_index:04d}",
                    "sku_name_en": f"Preloaded item {sku_index:04d}",
                    "sku_spec": None,
                    "sku_barcode": None,
                },
            )
        keep_outbox = ctx.keep_all or ts >= ctx.outbox_after
        for version, (event, from_status, to_status, actor, event_type) in enumerate(path, 1):
            when = at[event]
            tables.add(
                "order_event",
                {
                    "id": o * 16 + version,
                    "order_id": o,
                    "version": version,
                    "event": event,
                    "from_status": from_status,
                    "to_status": to_status,
                    "actor_kind": actor,
                    "actor_id": "api_key:1" if actor == "api" else actor,
                    "source_ip": "127.0.0.1" if actor == "api" else None,
                    "evidence_ref": None,
                    "note": None,
                    "occurred_at": when,
                },
            )
            if not keep_outbox:
                continue
            if event == "create":
                payload = {
                    "order_id": o,
                    "order_no": order_no,
                    "channel": channel,
                    "external_id": external,
                    "status": to_status,
                    "currency": "CNY",
                    "total_minor": subtotal,
                    "base_currency": "CNY",
                    "fx_rate": "1",
                    "line_count": len(lines),
                    "created_at": when.isoformat(),
                }
            else:
                payload = {
                    "order_id": o,
                    "order_no": order_no,
                    "transition": event,
                    "from_status": from_status,
                    "to_status": to_status,
                    "version": version,
                    "actor_kind": actor,
                    "actor_id": actor,
                    "evidence_ref": None,
                    "occurred_at": when.isoformat(),
                }
            event_id = str(uuid.UUID(int=(o << 8) | version, version=4))
            done = when + timedelta(milliseconds=40)
            tables.add(
                "outbox",
                {
                    "id": o * 16 + version,
                    "event_id": event_id,
                    "event_type": event_type,
                    "event_version": 1,
                    "aggregate_type": "order",
                    "aggregate_id": str(o),
                    "payload": orjson.dumps(payload).decode(),
                    "occurred_at": when,
                    "status": "done",
                    "attempts": 1,
                    "available_at": when,
                    "last_error": None,
                    "done_at": done,
                },
            )
            if done.timestamp() >= ctx.dedupe_after:
                consumers = ORDER_CONSUMERS + (CREATED_CONSUMERS if event == "create" else ())
                for consumer in consumers:
                    tables.add(
                        "processed_event",
                        {"consumer": consumer, "event_id": event_id, "processed_at": done},
                    )
        if channel == "wechat_mini" and (ctx.keep_all or ts >= ctx.keys_after):
            body = orjson.dumps(
                {
                    "order_no": order_no,
                    "status": "pending_payment",
                    "total": f"{subtotal / 100:.2f}",
                    "currency": "CNY",
                    "lines": [{"sku": f"PL-SKU-{s:04d}", "quantity": q} for _, _, s, q, _ in lines],
                    "created_at": created.isoformat(),
                }
            ).decode()
            tables.add(
                "idempotency_key",
                {
                    "scope": API_SCOPE,
                    "key": f"preload-{o}",
                    "request_hash": hashlib.sha256(b"r%d" % o).hexdigest(),
                    "response_status": 201,
                    "response_body": body,
                    "created_at": created,
                    "expires_at": created + ctx.ttl,
                },
            )
        tables.add(
            "customer_order",
            {
                "id": o,
                "order_id": o,
                "order_no": order_no,
                "customer_id": c,
                "channel": channel,
                "placed_at": created,
                "amount_minor": subtotal,
                "currency": "CNY",
                "skus": orjson.dumps([f"PL-SKU-{s:04d}" for _, _, s, _, _ in lines]).decode(),
                "categories": "[]",
                "status": status,
                "refunded_at": at.get("refund") or at.get("aftersale_partial_refund"),
                "updated_at": updated,
            },
        )
        paid = "payment_succeeded" in at
        if paid:
            paid_at = at["payment_succeeded"]
            provider = "wechatpay" if o % 3 else "alipay"
            out_trade_no = f"{order_no}P01"
            txn = f"42000{o:020d}"
            refunded = (
                subtotal
                if status == "refunded"
                else (subtotal // 4 if status == "partially_refunded" else 0)
            )
            tables.add(
                "payment",
                {
                    "id": o,
                    "order_id": o,
                    "order_no": order_no,
                    "provider": provider,
                    "out_trade_no": out_trade_no,
                    "amount_minor": subtotal,
                    "currency": "CNY",
                    "state": "paid",
                    "provider_txn_id": txn,
                    "paid_amount_minor": subtotal,
                    "paid_at": paid_at,
                    "settles_order": True,
                    "refunded_minor": refunded,
                    "provider_params": None,
                    "deadline_at": created + timedelta(minutes=30),
                    "next_query_at": None,
                    "query_count": 0,
                    "last_query_at": None,
                    "last_query_state": None,
                    "last_error": None,
                    "created_by": "api_key:1",
                    "created_at": created,
                    "updated_at": paid_at,
                },
            )
            dedupe_key = f"{provider}:{txn}:SUCCESS"
            raw = ""
            if paid_at.timestamp() >= ctx.inbox_after:
                raw = seal_body(
                    orjson.dumps(
                        {"out_trade_no": out_trade_no, "transaction_id": txn, "amount": subtotal}
                    ).decode(),
                    body_key(provider, dedupe_key),
                )
            tables.add(
                "payment_notification",
                {
                    "id": o,
                    "provider": provider,
                    "source": "callback",
                    "dedupe_key": dedupe_key,
                    "event_type": "TRANSACTION.SUCCESS",
                    "out_trade_no": out_trade_no,
                    "provider_txn_id": txn,
                    "trade_state": "SUCCESS",
                    "headers": "{}",
                    "body": raw,
                    "facts": orjson.dumps({"kind": "payment", "amount_minor": subtotal}).decode(),
                    "verification": "verified",
                    "rejection_reason": None,
                    "source_ip": "127.0.0.1",
                    "received_at": paid_at,
                    "applied_at": paid_at,
                    "outcome": "paid",
                    "payment_id": o,
                },
            )
        shipped = "ship" in at
        warehouse = o % len(WAREHOUSES)
        if shipped:
            ship_at = at["ship"]
            delivered_at = at.get("deliver")
            tables.add(
                "shipment",
                {
                    "id": o,
                    "order_id": o,
                    "order_no": order_no,
                    "warehouse_code": WAREHOUSES[warehouse][0],
                    "seq": 1,
                    "status": "delivered" if delivered_at else "in_transit",
                    "carrier": "sf",
                    "company": "shunfeng",
                    "waybill_no": f"SF{o:013d}",
                    "waybill_label": "",
                    "waybill_attempts": 1,
                    "next_waybill_at": None,
                    "last_error": "",
                    "confirmed_at": ship_at,
                    "confirmed_by": "warehouse",
                    "shipped_at": ship_at,
                    "shipped_by": "warehouse",
                    "subscribed_at": ship_at,
                    "subscribe_attempts": 1,
                    "next_subscribe_at": None,
                    "tracking_state_code": "3" if delivered_at else "0",
                    "last_event_at": delivered_at or ship_at,
                    "last_news_at": delivered_at or ship_at,
                    "last_polled_at": None,
                    "next_poll_at": None,
                    "stale_flagged_at": None,
                    "delivered_at": delivered_at,
                    "created_at": at["allocate"],
                    "updated_at": delivered_at or ship_at,
                },
            )
        for line_id, n, sku_index, quantity, _ in lines:
            if shipped:
                tables.add(
                    "shipment_line",
                    {
                        "shipment_id": o,
                        "order_line_id": line_id,
                        "line_no": n,
                        "sku": f"PL-SKU-{sku_index:04d}",
                        "quantity": quantity,
                    },
                )
            tables.add(
                "reservation",
                {
                    "id": line_id,
                    "order_id": o,
                    "order_line_id": line_id,
                    "stock_id": sku_index * len(WAREHOUSES) + warehouse + 1,
                    "warehouse_id": warehouse + 1,
                    "sku": f"PL-SKU-{sku_index:04d}",
                    "quantity": quantity,
                    "state": "consumed" if shipped else "released",
                    "expires_at": None,
                    "created_at": created,
                    "updated_at": updated,
                },
            )


def reference_rows(t1: float) -> Tables:
    """Warehouses, the SKUs the orders buy, one stock row per (warehouse, SKU) and the receipt
    that puts its units on hand (the ledger `ordertally doctor` compares with)."""
    tables = Tables()
    at = datetime.fromtimestamp(t1 - SPAN_DAYS * 86400 - 86400, UTC)
    for w, (code, name, province, city, lat, lon) in enumerate(WAREHOUSES, 1):
        tables.add(
            "warehouse",
            {
                "id": w,
                "code": code,
                "name": name,
                "province": province,
                "city": city,
                "latitude": lat,
                "longitude": lon,
                "priority": 10 + w,
                "cost_factor": 1.0,
                "active": True,
                "created_at": at,
                "updated_at": at,
            },
        )
    for s in range(SKUS):
        tables.add(
            "sku",
            {
                "id": s + 1,
                "code": f"PL-SKU-{s:04d}",
                "name": f"预载商品 {s:04d}",
                "name_en": f"Preloaded item {s:04d}",
                "active": True,
                "updated_at": at,
            },
        )
        for w in range(len(WAREHOUSES)):
            stock_id = s * len(WAREHOUSES) + w + 1
            tables.add(
                "stock",
                {
                    "id": stock_id,
                    "warehouse_id": w + 1,
                    "sku": f"PL-SKU-{s:04d}",
                    "bucket": 0,
                    "on_hand": STOCK_ON_HAND,
                    "reserved": 0,
                    "safety_stock": 0,
                },
            )
            tables.add(
                "stock_movement",
                {
                    "id": stock_id,
                    "warehouse_id": w + 1,
                    "sku": f"PL-SKU-{s:04d}",
                    "kind": "receipt",
                    "quantity": STOCK_ON_HAND,
                    "reason": "preload",
                    "actor": "bench",
                    "order_id": None,
                    "created_at": at,
                },
            )
    return tables


# --- worker processes: generate a chunk and COPY it -------------------------------------------

_STATE: dict[str, Any] = {}


def _init(cfg: dict[str, Any]) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    os.environ["ORDERTALLY_PII_KEY"] = cfg["pii_key"]
    os.environ["ORDERTALLY_DATABASE_URL"] = cfg["url"]
    _STATE["ctx"] = Context(cfg)
    _STATE["loop"] = asyncio.new_event_loop()
    _STATE["conn"] = None


async def _copy(tables: Tables, order: tuple[str, ...]) -> None:
    import asyncpg

    conn = _STATE["conn"]
    if conn is None:
        conn = _STATE["conn"] = await asyncpg.connect(asyncpg_dsn(_STATE["ctx"].cfg["url"]))
        await conn.execute("SET synchronous_commit = off")
    async with conn.transaction():
        for table in order:
            rows = tables.rows.get(table)
            if rows:
                await conn.copy_records_to_table(
                    table, records=rows, columns=tables.columns[table].names
                )


def run_task(task: tuple[str, int, int]) -> dict[str, Any]:
    """Generate one chunk (customers or orders first..last-1) and COPY it; rows and seconds."""
    kind, first, last = task
    ctx: Context = _STATE["ctx"]
    tables = Tables()
    started = time.perf_counter()
    if kind == "customers":
        customer_chunk(ctx, tables, first, last)
        order = CUSTOMER_TABLES
    else:
        order_chunk(ctx, tables, first, last)
        order = ORDER_TABLES
    generated = time.perf_counter()
    _STATE["loop"].run_until_complete(_copy(tables, order))
    return {
        "kind": kind,
        "count": last - first,
        "rows": {t: len(r) for t, r in tables.rows.items()},
        "generate_s": generated - started,
        "copy_s": time.perf_counter() - generated,
    }


def tasks(orders: int, chunk: int) -> tuple[list[tuple[str, int, int]], list[tuple[str, int, int]]]:
    """Customer tasks (loaded first: the orders' links point at them), then order tasks."""
    customers = max(1, int(orders / ORDERS_PER_CUSTOMER))
    people = [
        ("customers", a, min(a + chunk * 2, customers + 1))
        for a in range(1, customers + 1, chunk * 2)
    ]
    work = [("orders", a, min(a + chunk, orders + 1)) for a in range(1, orders + 1, chunk)]
    return people, work


# --- the database side ---------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


BIG_TABLES = ORDER_TABLES + CUSTOMER_TABLES

SECONDARY_INDEXES_SQL = """
SELECT i.indexrelid::regclass::text AS name, c.relname AS "table",
       pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relname = ANY($1::text[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
ORDER BY c.relname, 1
"""

# The sequences behind the loaded tables' serial or identity columns.
OWNED_SEQUENCES_SQL = """
SELECT t.relname AS "table", a.attname AS "column", s.oid::regclass::text AS sequence
FROM pg_depend d
JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S'
JOIN pg_class t ON t.oid = d.refobjid
JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
WHERE d.deptype IN ('a', 'i') AND t.relname = ANY($1::text[])
"""

SIZES_SQL = """
SELECT c.relname AS "table", c.reltuples::bigint AS rows,
       pg_table_size(c.oid) AS table_bytes, pg_indexes_size(c.oid) AS index_bytes,
       pg_total_relation_size(c.oid) AS total_bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = current_schema() AND c.relkind = 'r'
ORDER BY pg_total_relation_size(c.oid) DESC
"""


async def table_sizes(conn: Any) -> list[dict[str, Any]]:
    """Every table's rows (planner estimate), table, index and total bytes, largest first."""
    return [dict(r) for r in await conn.fetch(SIZES_SQL)]


def growth(sizes: list[dict[str, Any]], orders: int) -> list[dict[str, Any]]:
    """Sizes per million orders (MiB), for the tables that hold at least 1 MiB."""
    per = 1_000_000 / max(orders, 1)
    out = []
    for s in sizes:
        if s["total_bytes"] < 2**20:
            continue
        out.append(
            {
                "table": s["table"],
                "rows_per_million_orders": round(s["rows"] * per),
                "table_mib_per_million": round(s["table_bytes"] * per / 2**20, 1),
                "index_mib_per_million": round(s["index_bytes"] * per / 2**20, 1),
                "total_mib_per_million": round(s["total_bytes"] * per / 2**20, 1),
            }
        )
    return out


def growth_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'table':<24}{'rows/M orders':>15}{'table MiB/M':>13}{'index MiB/M':>13}"
        f"{'total MiB/M':>13}"
    ]
    for r in rows:
        lines.append(
            f"{r['table']:<24}{r['rows_per_million_orders']:>15,}{r['table_mib_per_million']:>13}"
            f"{r['index_mib_per_million']:>13}{r['total_mib_per_million']:>13}"
        )
    total = sum(r["total_mib_per_million"] for r in rows)
    lines.append(f"{'all of the above':<24}{'':>15}{'':>13}{'':>13}{total:>13.1f}")
    return "\n".join(lines)


async def _connect(url: str) -> Any:
    import asyncpg

    return await asyncpg.connect(asyncpg_dsn(url))


async def recreate(admin_url: str, name: str) -> None:
    conn = await _connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def drop_database(admin_url: str, name: str) -> None:
    conn = await _connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def before_load(url: str, reference: Tables, keep_indexes: bool) -> list[dict[str, str]]:
    """Load the reference rows; drop the big tables' secondary indexes (returned, to build
    again) unless told to keep them."""
    conn = await _connect(url)
    try:
        for table in REFERENCE_TABLES:
            await conn.copy_records_to_table(
                table, records=reference.rows[table], columns=reference.columns[table].names
            )
        dropped: list[dict[str, str]] = []
        if not keep_indexes:
            for row in await conn.fetch(SECONDARY_INDEXES_SQL, list(BIG_TABLES)):
                dropped.append(dict(row))
                await conn.execute(f"DROP INDEX {row['name']}")
        return dropped
    finally:
        await conn.close()


async def build_indexes(url: str, dropped: list[dict[str, str]], connections: int) -> None:
    """Create the dropped indexes again, `connections` at a time."""
    queue = list(dropped)

    async def builder() -> None:
        conn = await _connect(url)
        try:
            await conn.execute("SET maintenance_work_mem = '512MB'")
            while queue:
                index = queue.pop(0)
                await conn.execute(index["definition"])
        finally:
            await conn.close()

    await asyncio.gather(*(builder() for _ in range(max(1, connections))))


async def after_load(url: str, vacuum: bool) -> dict[str, float]:
    """Sequences past the largest ids, then VACUUM ANALYZE (or ANALYZE) the loaded tables."""
    conn = await _connect(url)
    timing: dict[str, float] = {}
    try:
        for row in await conn.fetch(OWNED_SEQUENCES_SQL, list((*REFERENCE_TABLES, *BIG_TABLES))):
            await conn.execute(
                f"SELECT setval('{row['sequence']}', "
                f"(SELECT coalesce(max({row['column']}), 0) + 1 FROM {row['table']}), false)"
            )
        started = time.perf_counter()
        for table in (*REFERENCE_TABLES, *BIG_TABLES):
            await conn.execute(f"{'VACUUM (ANALYZE)' if vacuum else 'ANALYZE'} {table}")
        timing["vacuum_s" if vacuum else "analyze_s"] = round(time.perf_counter() - started, 1)
    finally:
        await conn.close()
    return timing


# --- the command ---------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.preload", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--name", default="ordertally_preload", help="the database to (re)create")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("ORDERTALLY_TEST_PG_URL") or DEFAULT_PG_URL,
        help="an existing database to connect to for CREATE/DROP DATABASE",
    )
    parser.add_argument("--processes", type=int, default=2, help="generating and COPYing")
    parser.add_argument("--chunk", type=int, default=CHUNK, help="orders per COPY transaction")
    parser.add_argument(
        "--retention",
        choices=("none", "default"),
        default="default",
        help="default: only what the default retention keeps (the purges run, as they do in a "
        "deployment); none: outbox events and idempotency keys for every order (they never ran)",
    )
    parser.add_argument(
        "--keep-indexes", action="store_true", help="COPY with the secondary indexes in place"
    )
    parser.add_argument("--no-vacuum", action="store_true", help="ANALYZE only after the load")
    parser.add_argument("--drop", action="store_true", help="drop the database when done")
    parser.add_argument(
        "--drop-only", action="store_true", help="only drop the database --name (and its manifest)"
    )
    args = parser.parse_args(argv)
    if args.orders < 1 or args.processes < 1 or args.chunk < 100:
        parser.error("--orders and --processes must be positive, --chunk at least 100")
    return args


def preload(args: argparse.Namespace) -> dict[str, Any]:
    """Create, migrate and fill the database; the manifest."""
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    url = make_url(args.pg_url).set(database=args.name).render_as_string(hide_password=False)
    data_dir = RESULTS / f"preload-{args.name}"
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERTALLY_")}
    env |= {
        "ORDERTALLY_PII_KEY": key,
        "ORDERTALLY_DATABASE_URL": url,
        "ORDERTALLY_DATA_DIR": str(data_dir),
    }
    wall = time.perf_counter()
    asyncio.run(recreate(args.pg_url, args.name))
    subprocess.run(
        [sys.executable, "-m", "ordertally", "migrate"], env=env, check=True, capture_output=True
    )
    migrated = time.perf_counter()
    t1 = time.time() - 300
    cfg = {"orders": args.orders, "t1": t1, "retention": args.retention, "pii_key": key, "url": url}
    os.environ.update({k: v for k, v in env.items() if k.startswith("ORDERTALLY_")})
    reference = reference_rows(t1)
    dropped = asyncio.run(before_load(url, reference, args.keep_indexes))
    people, work = tasks(args.orders, args.chunk)
    rows: dict[str, int] = {t: len(r) for t, r in reference.rows.items()}
    cpu = {"generate_s": 0.0, "copy_s": 0.0}
    loaded = 0
    copy_started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(
        args.processes, initializer=_init, initargs=(cfg,)
    ) as pool:
        for phase in (people, work):
            for part in pool.imap_unordered(run_task, phase):
                for table, n in part["rows"].items():
                    rows[table] = rows.get(table, 0) + n
                cpu["generate_s"] += part["generate_s"]
                cpu["copy_s"] += part["copy_s"]
                if part["kind"] == "orders":
                    loaded += part["count"]
                    if loaded % (args.chunk * 20) == 0 or loaded == args.orders:
                        rate = loaded / (time.perf_counter() - copy_started)
                        _say(f"  {loaded:,}/{args.orders:,} orders ({rate:,.0f} orders/s)")
    copied = time.perf_counter()
    asyncio.run(build_indexes(url, dropped, args.processes))
    indexed = time.perf_counter()
    timing = asyncio.run(after_load(url, not args.no_vacuum))

    async def measure() -> list[dict[str, Any]]:
        conn = await _connect(url)
        try:
            return await table_sizes(conn)
        finally:
            await conn.close()

    sizes = asyncio.run(measure())
    finished = time.perf_counter()
    total_rows = sum(rows.values())
    manifest = {
        "url": url,
        "name": args.name,
        "pii_key": key,
        "orders": args.orders,
        "customers": max(1, int(args.orders / ORDERS_PER_CUSTOMER)),
        "retention": args.retention,
        "keep_indexes": args.keep_indexes,
        "processes": args.processes,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "rows": rows,
        "rows_total": total_rows,
        "seconds": {
            "migrate": round(migrated - wall, 1),
            "copy": round(copied - copy_started, 1),
            "indexes": round(indexed - copied, 1),
            **timing,
            "wall": round(finished - wall, 1),
            "generate_cpu_in_workers": round(cpu["generate_s"], 1),
            "copy_wait_in_workers": round(cpu["copy_s"], 1),
        },
        "rows_per_s_copy": round(total_rows / max(copied - copy_started, 1e-9)),
        "orders_per_s_wall": round(args.orders / max(finished - wall, 1e-9)),
        "indexes_rebuilt": [d["name"] for d in dropped],
        "sizes": sizes,
        "growth_per_million_orders": growth(sizes, args.orders),
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    manifest_path(args.name).write_text(json.dumps(manifest, ensure_ascii=False, indent=1))
    return manifest


def forget(admin_url: str, name: str) -> None:
    """Drop a preloaded database, its manifest and its data directory."""
    asyncio.run(drop_database(admin_url, name))
    manifest_path(name).unlink(missing_ok=True)
    shutil.rmtree(RESULTS / f"preload-{name}", ignore_errors=True)


def manifest_path(name: str) -> Path:
    return RESULTS / f"preload-{name}.json"


def load_manifest(name: str) -> dict[str, Any]:
    """The manifest `python -m bench.preload --name NAME` wrote."""
    path = manifest_path(name)
    if not path.exists():
        raise SystemExit(f"no {path.relative_to(ROOT)}: run python -m bench.preload --name {name}")
    return dict(json.loads(path.read_text()))


def _say(text: str) -> None:
    print(text, flush=True)


def report(manifest: dict[str, Any]) -> str:
    s = manifest["seconds"]
    lines = [
        f"{manifest['orders']:,} orders ({manifest['rows_total']:,} rows) into "
        f"{manifest['name']} in {s['wall']:.0f} s wall: COPY {s['copy']:.0f} s "
        f"({manifest['rows_per_s_copy']:,} rows/s, {manifest['processes']} processes), "
        f"indexes {s['indexes']:.0f} s, "
        + ", ".join(f"{k} {v:.0f} s" for k, v in s.items() if k in ("vacuum_s", "analyze_s"))
        + f"; {manifest['orders_per_s_wall']:,} orders/s overall",
        f"secondary indexes {'kept during the COPY' if manifest['keep_indexes'] else 'rebuilt'}"
        f": {len(manifest['indexes_rebuilt'])}; retention {manifest['retention']}",
        "",
        "growth per million orders:",
        growth_table(manifest["growth_per_million_orders"]),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.drop_only:
        forget(args.pg_url, args.name)
        _say(f"dropped {args.name}")
        return 0
    _say(f"preloading {args.orders:,} orders into {args.name} ({args.processes} processes)")
    try:
        manifest = preload(args)
        _say(report(manifest))
        _say(f"manifest: {manifest_path(args.name).relative_to(ROOT)}")
    finally:
        if args.drop:
            forget(args.pg_url, args.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
