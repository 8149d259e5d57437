"""The one entry point of every ingestion path (webhook, pull, file): canonical orders in,
orders out, exactly once per (account, external order id).

Orders are written in chunks, one transaction per chunk: the chunk's known orders are read in
one query (the link table, then `sales_order` by (channel, external id) for orders another path
created without a link), new orders are built in Python and inserted with a few multi-row
statements (orders, lines, audit rows, outbox events, links), each one reserving its stock
through inventory's `reserve_for_order` like `orders.service.create_order` does. A concurrent
delivery of the same order (another process, another path) makes the chunk's INSERT fail on a
unique constraint; the chunk is then rolled back and read again, where the order is known.

Phones: platforms such as Pinduoduo and Douyin give masked phones ("138****1234") and Amazon
often none. Such a phone is kept as given (encrypted, shown as given); its blind index is
computed over (platform, buyer id or order id, masked form) under its own purpose, so it never
equals a real phone's index and never merges strangers; customers match those buyers by
`buyer_platform_id`. A real phone is normalised to E.164 as every order's.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy import insert, select, text, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels.canonical import CanonicalOrder, PlatformStatus
from ordertally.channels.errors import AccountNotFound
from ordertally.channels.events import ChannelOrderIngested
from ordertally.channels.models import ChannelAccount, ChannelOrderLink, ChannelSkuMapping
from ordertally.core import clock, ids, money, phones
from ordertally.core.crypto import PiiCipher, get_cipher
from ordertally.core.db import Database, table_of
from ordertally.core.errors import OrdertallyError
from ordertally.core.settings import Settings, get_settings
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.inventory import service as inventory_service
from ordertally.inventory.errors import InsufficientStock
from ordertally.inventory.models import Sku, Stock
from ordertally.orders import service as orders_service
from ordertally.orders.errors import ActorNotAllowed
from ordertally.orders.events import OrderCreated
from ordertally.orders.models import OrderEvent, OrderLine, SalesOrder
from ordertally.orders.service import PII_ADDRESS, PII_NAME, PII_PHONE, Actor, mask_name
from ordertally.orders.state_machine import CREATION, ActorKind, Status

log = logging.getLogger(__name__)

VIAS = ("webhook", "pull", "file")

INGESTED = Counter(
    "ordertally_channel_orders_ingested_total",
    "Platform orders stored, by account, path and outcome (created, updated, duplicate, error)",
    ["account", "platform", "via", "outcome"],
)
CHUNK_RETRIES = Counter(
    "ordertally_channel_ingest_retries_total",
    "Ingest chunks read again after a concurrent delivery of the same orders",
    ["account"],
)

_ORDER = table_of(SalesOrder)
_LINE = table_of(OrderLine)
_LINK = table_of(ChannelOrderLink)
# Plain multi-row INSERTs (RETURNING in parameter order runs row by row on SQLite); the ids
# are read back by their natural keys in one SELECT each.
_INSERT_ORDERS = insert(_ORDER)
_INSERT_LINES = insert(_LINE)
_INSERT_AUDIT = insert(table_of(OrderEvent))
_INSERT_LINKS = insert(_LINK)
_UNSHIPPED = frozenset({Status.PENDING_PAYMENT, Status.PAID, Status.ALLOCATED, Status.FULFILLING})
MAX_CHUNK_ATTEMPTS = 5


@dataclass
class IngestResult:
    created: int = 0
    updated: int = 0
    duplicates: int = 0
    held: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (external_id, message)
    # external id -> order number of every order stored or recognised (not part of equality).
    order_nos: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def add(self, other: IngestResult) -> None:
        self.created += other.created
        self.updated += other.updated
        self.duplicates += other.duplicates
        self.held += other.held
        self.errors.extend(other.errors)
        self.order_nos.update(other.order_nos)


@dataclass(frozen=True, slots=True)
class AccountRef:
    id: int
    code: str
    platform: str


class _Invalid(Exception):
    """An order refused before anything is written (reported in IngestResult.errors)."""


# --- entry point -------------------------------------------------------------------------------


async def ingest_orders(
    db: Database, account_code: str, orders: Sequence[CanonicalOrder], *, via: str
) -> IngestResult:
    """Store platform orders: create the new ones, apply newer platform changes to known ones,
    count the rest as duplicates. Commits its own transactions, one per chunk."""
    if via not in VIAS:
        raise ValueError(f"via must be one of {VIAS}, not {via!r}")
    settings = get_settings()
    async with db.transaction(write=False) as session:
        account = await load_account_ref(session, account_code)
        mappings = await load_sku_mappings(session, account)
    result = IngestResult()
    size = max(settings.channels_ingest_chunk, 1)
    for start in range(0, len(orders), size):
        part = orders[start : start + size]
        for attempt in range(1, MAX_CHUNK_ATTEMPTS + 1):
            try:
                async with db.transaction() as session:
                    if not db.is_sqlite:
                        # Plan the known-id lookups for these values, not once for a table that
                        # was empty when a bulk load began (a generic plan cached then stays a
                        # sequential scan: 100k orders took 454 s instead of ~45 s).
                        await session.execute(text("SET LOCAL plan_cache_mode = force_custom_plan"))
                    partial = await ingest_chunk(session, account, part, via, mappings, settings)
                break
            except IntegrityError:
                # Another delivery of some of these orders committed first: read them again.
                if attempt == MAX_CHUNK_ATTEMPTS:
                    raise
                CHUNK_RETRIES.labels(account.code).inc()
                log.info("ingest chunk of %s raced another delivery; retrying", account.code)
        result.add(partial)
        count(account, via, partial)
    return result


def count(account: AccountRef, via: str, result: IngestResult) -> None:
    """Add a result to the ingestion metrics."""
    labels = (account.code, account.platform, via)
    INGESTED.labels(*labels, "created").inc(result.created)
    INGESTED.labels(*labels, "updated").inc(result.updated)
    INGESTED.labels(*labels, "duplicate").inc(result.duplicates)
    INGESTED.labels(*labels, "error").inc(len(result.errors))


async def load_account_ref(session: AsyncSession, code: str) -> AccountRef:
    row = (
        await session.execute(
            select(ChannelAccount.id, ChannelAccount.code, ChannelAccount.platform).where(
                ChannelAccount.code == code
            )
        )
    ).first()
    if row is None:
        raise AccountNotFound(f"channel account {code!r} does not exist", account=code)
    return AccountRef(int(row.id), str(row.code), str(row.platform))


async def load_sku_mappings(session: AsyncSession, account: AccountRef) -> dict[str, str]:
    """platform SKU -> our SKU for this account (account mappings win over platform-wide)."""
    rows = (
        await session.execute(
            select(
                ChannelSkuMapping.account_code,
                ChannelSkuMapping.platform_sku,
                ChannelSkuMapping.sku,
            ).where(
                ChannelSkuMapping.platform == account.platform,
                ChannelSkuMapping.account_code.in_(["", account.code]),
            )
        )
    ).all()
    mapping: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: r.account_code != ""):
        mapping[row.platform_sku] = row.sku
    return mapping


# --- one chunk ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Known:
    order_id: int
    order_no: str
    platform_updated_at: datetime | None  # None: an order another path made without a link
    raw_status: str
    address_hash: str


async def ingest_chunk(
    session: AsyncSession,
    account: AccountRef,
    orders: Sequence[CanonicalOrder],
    via: str,
    mappings: dict[str, str],
    settings: Settings,
) -> IngestResult:
    """Ingest up to one chunk inside the caller's transaction."""
    result = IngestResult()
    # The newest version of each order in the chunk; older copies are duplicates already.
    latest: dict[str, CanonicalOrder] = {}
    for order in orders:
        seen = latest.get(order.external_id)
        if seen is not None:
            result.duplicates += 1
            if order.updated_at <= seen.updated_at:
                continue
        latest[order.external_id] = order
    known = await _known(session, account, list(latest))
    cipher = get_cipher()
    new: list[CanonicalOrder] = []
    changed: list[tuple[CanonicalOrder, _Known]] = []
    for external_id, order in latest.items():
        hit = known.get(external_id)
        if hit is None:
            new.append(order)
            continue
        result.order_nos[external_id] = hit.order_no
        if hit.platform_updated_at is not None and order.updated_at <= hit.platform_updated_at:
            result.duplicates += 1
        else:
            changed.append((order, hit))
    if new:
        await _create_many(session, account, new, via, mappings, settings, cipher, result)
    for order, hit in changed:
        await _apply_change(session, account, order, hit, via, cipher)
        result.updated += 1
    return result


async def _known(
    session: AsyncSession, account: AccountRef, external_ids: list[str]
) -> dict[str, _Known]:
    if not external_ids:
        return {}
    known: dict[str, _Known] = {}
    rows = await session.execute(
        select(
            _LINK.c.external_id,
            _LINK.c.order_id,
            _LINK.c.order_no,
            _LINK.c.platform_updated_at,
            _LINK.c.raw_status,
            _LINK.c.address_hash,
        ).where(_LINK.c.account_id == account.id, _LINK.c.external_id.in_(external_ids))
    )
    for row in rows:
        known[row.external_id] = _Known(
            row.order_id,
            row.order_no,
            clock.as_utc(row.platform_updated_at),
            row.raw_status,
            row.address_hash,
        )
    missing = [e for e in external_ids if e not in known]
    if missing:
        # Orders with this channel and external id made by another entry (e.g. the orders API).
        rows = await session.execute(
            select(_ORDER.c.external_id, _ORDER.c.id, _ORDER.c.order_no).where(
                _ORDER.c.channel == account.code, _ORDER.c.external_id.in_(missing)
            )
        )
        for row in rows:
            known[row.external_id] = _Known(row.id, row.order_no, None, "", "")
    return known


# --- building new orders -----------------------------------------------------------------------


@dataclass(slots=True)
class _Built:
    source: CanonicalOrder
    creation: str  # create | import_paid
    values: dict[str, Any]
    lines: list[dict[str, Any]]
    unmapped: list[str]
    address_hash: str


def _address_hash(cipher: PiiCipher, order: CanonicalOrder) -> str:
    a = order.address
    doc = orjson.dumps(
        [a.name, a.phone, a.province, a.city, a.district, a.line1, a.postal_code, a.country]
    ).decode()
    return cipher.blind_index(doc, "channel_address")


def phone_fields(
    cipher: PiiCipher, raw: str, *, platform: str, buyer_key: str
) -> tuple[str, str, str, str]:
    """(stored phone, blind index, masked display, last 4) under the masked-phone rule."""
    given = raw.strip()
    if given and "*" not in given:
        try:
            e164 = phones.normalise(given)
        except phones.InvalidPhone:
            pass
        else:
            return e164, cipher.blind_index(e164, "phone"), phones.mask(e164), phones.last4(e164)
    digits = "".join(ch for ch in given if ch.isdigit())
    bidx = cipher.blind_index(f"{platform}\x1f{buyer_key}\x1f{given}", "phone_masked")
    return given, bidx, given[:32], digits[-4:] if len(digits) >= 4 else ""


def _creation_of(status: PlatformStatus) -> str:
    if status in (PlatformStatus.UNPAID, PlatformStatus.CANCELLED):
        return "create"
    return "import_paid"


def _build(
    account: AccountRef,
    order: CanonicalOrder,
    mappings: dict[str, str],
    known_skus: set[str],
    settings: Settings,
    cipher: PiiCipher,
    now: datetime,
) -> _Built:
    if not order.external_id or len(order.external_id) > 128:
        raise _Invalid("external_id must have 1 to 128 characters")
    if not order.lines:
        raise _Invalid("the order has no lines")
    if len(order.lines) > 200:
        raise _Invalid("the order has more than 200 lines")
    for stamp in (order.placed_at, order.updated_at):
        if stamp.tzinfo is None:
            raise _Invalid("timestamps must be timezone-aware")
    try:
        currency = money.check_currency(order.currency)
        fx_rate = orders_service._fx_rate(settings, currency)
    except OrdertallyError as exc:
        raise _Invalid(exc.detail) from exc
    gross: list[int] = []
    line_discounts: list[int] = []
    skus: list[str] = []
    unmapped: list[str] = []
    for line in order.lines:
        if line.quantity <= 0 or line.quantity > 100_000:
            raise _Invalid(f"line {line.platform_sku!r}: quantity must be 1..100000")
        if line.unit_price_minor < 0 or line.discount_minor < 0:
            raise _Invalid(f"line {line.platform_sku!r}: negative price or discount")
        amount = line.unit_price_minor * line.quantity
        if line.discount_minor > amount:
            raise _Invalid(f"line {line.platform_sku!r}: discount exceeds the line amount")
        gross.append(amount)
        line_discounts.append(line.discount_minor)
        sku = mappings.get(line.platform_sku)
        if sku is None:
            sku = line.platform_sku[:64] or "UNMAPPED"
            if sku not in known_skus:
                unmapped.append(line.platform_sku)
        skus.append(sku)
    subtotal = sum(gross)
    if order.discount_minor < 0:
        raise _Invalid("negative order discount")
    net = [g - d for g, d in zip(gross, line_discounts, strict=True)]
    if order.discount_minor > sum(net):
        raise _Invalid("discount exceeds the order's subtotal")
    spread = money.split_by_largest_remainder(order.discount_minor, net) if any(net) else []
    for n, extra in enumerate(spread):
        line_discounts[n] += extra
    discount = sum(line_discounts)
    total = subtotal - discount

    buyer_key = order.buyer_platform_id or order.external_id
    phone, phone_bidx, phone_masked, last4 = phone_fields(
        cipher,
        order.buyer_phone or order.address.phone,
        platform=account.platform,
        buyer_key=buyer_key,
    )
    ship_phone, _, ship_masked, _ = phone_fields(
        cipher, order.address.phone, platform=account.platform, buyer_key=buyer_key
    )
    address = order.address
    address_doc = orjson.dumps(
        {
            "name": address.name,
            "phone": ship_phone,
            "province": address.province,
            "city": address.city,
            "district": address.district,
            "line1": address.line1,
            "postal_code": address.postal_code,
        }
    ).decode()
    creation = _creation_of(order.status)
    target = CREATION[creation][0]
    buyer_name = order.buyer_name or address.name or "-"
    fingerprint = hashlib.sha256(
        orjson.dumps(
            [
                account.code,
                phone_bidx,
                currency,
                total,
                sorted(
                    (s, ln.quantity, ln.unit_price_minor)
                    for s, ln in zip(skus, order.lines, strict=True)
                ),
            ]
        )
    ).hexdigest()
    # The platform runs the buyer's payment and tells us when it is paid or cancelled; our own
    # timeout only backstops a lost update, after the platform's own unpaid window.
    deadline = (
        now + timedelta(seconds=settings.channels_unpaid_deadline_seconds)
        if target is Status.PENDING_PAYMENT
        else None
    )
    values: dict[str, Any] = {
        "order_no": ids.order_no(now),
        "channel": account.code,
        "external_id": order.external_id,
        "status": target.value,
        "version": 1,
        "currency": currency,
        "subtotal_minor": subtotal,
        "discount_minor": discount,
        "total_minor": total,
        "base_currency": settings.base_currency,
        "fx_rate": str(fx_rate),
        "customer_name_enc": cipher.encrypt(buyer_name, PII_NAME),
        "customer_name_masked": mask_name(buyer_name)[:64],
        "customer_phone_enc": cipher.encrypt(phone, PII_PHONE),
        "customer_phone_bidx": phone_bidx,
        "customer_phone_masked": phone_masked,
        "customer_phone_last4": last4,
        "shipping_address_enc": cipher.encrypt(address_doc, PII_ADDRESS),
        "ship_name_masked": mask_name(address.name or buyer_name)[:64],
        "ship_phone_masked": ship_masked,
        "ship_province": address.province[:32],
        "ship_city": address.city[:64],
        "ship_district": address.district[:64],
        "fingerprint": fingerprint,
        "created_by": f"channel:{account.code}",
        "payment_deadline_at": deadline,
        "created_at": now,
        "updated_at": now,
    }
    lines = [
        {
            "line_no": n,
            "sku": sku,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price_minor,
            "discount_minor": line_discounts[n - 1],
            "total_minor": gross[n - 1] - line_discounts[n - 1],
        }
        for n, (sku, line) in enumerate(zip(skus, order.lines, strict=True), start=1)
    ]
    return _Built(order, creation, values, lines, unmapped, _address_hash(cipher, order))


async def _known_skus(session: AsyncSession, candidates: set[str]) -> set[str]:
    if not candidates:
        return set()
    names = sorted(candidates)
    found: set[str] = set()
    for start in range(0, len(names), 500):
        part = names[start : start + 500]
        found.update(await session.scalars(select(Sku.code).where(Sku.code.in_(part))))
        found.update(await session.scalars(select(Stock.sku).where(Stock.sku.in_(part)).distinct()))
    return found


def _event_row(
    account: AccountRef, order: CanonicalOrder, order_id: int, order_no: str, *, created: bool
) -> dict[str, Any]:
    return outbox.build_row(
        "ChannelOrderIngested",
        ChannelOrderIngested(
            order_id=order_id,
            order_no=order_no,
            account=account.code,
            platform=account.platform,
            external_id=order.external_id,
            created=created,
            buyer_platform_id=order.buyer_platform_id,
            categories=[line.category for line in order.lines if line.category],
        ),
        aggregate_type="order",
        aggregate_id=order_no,
    )


async def _create_many(
    session: AsyncSession,
    account: AccountRef,
    orders: list[CanonicalOrder],
    via: str,
    mappings: dict[str, str],
    settings: Settings,
    cipher: PiiCipher,
    result: IngestResult,
) -> None:
    now = clock.now()
    candidates = {
        line.platform_sku[:64] or "UNMAPPED"
        for order in orders
        for line in order.lines
        if line.platform_sku not in mappings
    }
    known_skus = await _known_skus(session, candidates)
    built: list[_Built] = []
    for order in orders:
        try:
            built.append(_build(account, order, mappings, known_skus, settings, cipher, now))
        except _Invalid as exc:
            result.errors.append((order.external_id, str(exc)))
    if not built:
        return
    await session.execute(_INSERT_ORDERS, [b.values for b in built])
    ids_by_external = {
        row.external_id: int(row.id)
        for row in await session.execute(
            select(_ORDER.c.external_id, _ORDER.c.id).where(
                _ORDER.c.channel == account.code,
                _ORDER.c.external_id.in_([b.source.external_id for b in built]),
            )
        )
    }
    order_ids = [ids_by_external[b.source.external_id] for b in built]
    line_rows: list[dict[str, Any]] = []
    for b, order_id in zip(built, order_ids, strict=True):
        for row in b.lines:
            row["order_id"] = order_id
            line_rows.append(row)
    await session.execute(_INSERT_LINES, line_rows)
    line_ids = {
        (int(row.order_id), int(row.line_no)): int(row.id)
        for row in await session.execute(
            select(_LINE.c.order_id, _LINE.c.line_no, _LINE.c.id).where(
                _LINE.c.order_id.in_(order_ids)
            )
        )
    }
    for row in line_rows:
        row["id"] = line_ids[(row["order_id"], row["line_no"])]

    short = await reserve_many(
        session,
        [
            _Demand(
                order_id,
                [
                    inventory_service.LineDemand(r["id"], r["line_no"], r["sku"], r["quantity"])
                    for r in b.lines
                ],
                b.values["ship_province"],
                inventory_service.reservation_expiry(b.values["payment_deadline_at"]),
                CREATION[b.creation][0] is Status.PAID,
            )
            for b, order_id in zip(built, order_ids, strict=True)
        ],
    )
    audit: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    cancels: list[tuple[str, CanonicalOrder]] = []
    actor = Actor(ActorKind.CHANNEL_SYNC, f"channel:{account.code}", note=f"via {via}")
    for b, order_id in zip(built, order_ids, strict=True):
        values = b.values
        target = CREATION[b.creation][0]
        held = False
        if b.unmapped:
            await exceptions_service.open_case_record(
                session,
                order_id=order_id,
                category="channel",
                type="sku_unmapped",
                blocking=True,
                detail={"account": account.code, "platform_skus": sorted(set(b.unmapped))},
            )
            held = True
        if order_id in short:
            await exceptions_service.open_case_record(
                session,
                order_id=order_id,
                category="inventory",
                type="stock_shortage",
                blocking=True,
                detail={"skus": short[order_id]},
            )
            held = True
        if b.source.status in (PlatformStatus.SHIPPED, PlatformStatus.DELIVERED):
            # We never saw it unshipped: whoever shipped it, we must not ship it again.
            await _case(session, order_id, account, b.source, "shipped_on_platform", True)
            held = True
        elif b.source.status is PlatformStatus.REFUNDED:
            await _case(session, order_id, account, b.source, "platform_refunded", True)
            held = True
        elif b.source.status is PlatformStatus.CANCELLED:
            cancels.append((values["order_no"], b.source))
        result.held += int(held)
        audit.append(
            orders_service._audit_row(
                order_id, 1, b.creation, None, target.value, actor, values["created_at"]
            )
        )
        events.append(
            outbox.build_row(
                "OrderCreated",
                OrderCreated(
                    order_id=order_id,
                    order_no=values["order_no"],
                    channel=account.code,
                    external_id=b.source.external_id,
                    status=target.value,
                    currency=values["currency"],
                    total_minor=values["total_minor"],
                    base_currency=values["base_currency"],
                    fx_rate=values["fx_rate"],
                    line_count=len(b.lines),
                    created_at=now,
                ),
                aggregate_type="order",
                aggregate_id=values["order_no"],
            )
        )
        events.append(_event_row(account, b.source, order_id, values["order_no"], created=True))
        links.append(
            {
                "account_id": account.id,
                "external_id": b.source.external_id,
                "order_id": order_id,
                "order_no": values["order_no"],
                "platform_updated_at": b.source.updated_at,
                "raw_status": b.source.status.value,
                "address_hash": b.address_hash,
                "first_via": via,
                "last_via": via,
                "created_at": now,
                "updated_at": now,
            }
        )
        result.order_nos[b.source.external_id] = values["order_no"]
    await session.execute(_INSERT_AUDIT, audit)
    await session.execute(_INSERT_LINKS, links)
    await outbox.publish_rows(session, events)
    orders_service.ORDERS_CREATED.labels(account.code).inc(len(built))
    result.created += len(built)
    for order_no, source in cancels:
        await _cancel(session, account, order_no, source)


# --- stock ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Demand:
    order_id: int
    lines: list[inventory_service.LineDemand]
    province: str
    expires_at: datetime | None
    committed: bool


class _Raced(Exception):
    """A bucket changed between the chunk's read and its update."""


async def reserve_many(session: AsyncSession, demands: list[_Demand]) -> dict[int, list[Any]]:
    """Reserve stock for many new orders at once, as `reserve_for_order` would one by one.

    `inventory.service.plan_bulk` routes the chunk from one read; the reservation and
    allocation rows go in two multi-row INSERTs and the stock rows take the chunk's totals with
    the same conditional UPDATE (`available >= qty`). If any bucket changed meanwhile (another
    process), the chunk's reservations roll back to a savepoint and every order goes through
    `reserve_for_order` instead. Returns {order_id: shortfall} for orders left without stock
    (the caller holds them)."""
    if not demands:
        return {}
    bulk = await inventory_service.plan_bulk(
        session,
        [
            inventory_service.BulkDemand(inventory_service._demand(d.lines), d.province)
            for d in demands
        ],
    )
    now = clock.now()
    short: dict[int, list[Any]] = {}
    reservations: list[dict[str, Any]] = []
    allocations: list[dict[str, Any]] = []
    for index, d in enumerate(demands):
        if index in bulk.shortfall:
            short[d.order_id] = bulk.shortfall[index]
            continue
        reserved, allocation = inventory_service.bulk_rows(
            bulk, index, d.order_id, d.lines, d.expires_at, d.committed, now
        )
        reservations.extend(reserved.rows)
        allocations.append(allocation)
    try:
        async with session.begin_nested():
            await inventory_service.add_bulk_rows(session, reservations, allocations)
            if not await inventory_service.take_bulk(session, bulk.totals):
                raise _Raced
    except _Raced:
        log.info("bulk reservation raced another writer; reserving order by order")
        return await _reserve_one_by_one(session, demands)
    return short


async def _reserve_one_by_one(
    session: AsyncSession, demands: list[_Demand]
) -> dict[int, list[Any]]:
    short: dict[int, list[Any]] = {}
    for d in demands:
        try:
            await inventory_service.reserve_for_order(
                session,
                order_id=d.order_id,
                lines=d.lines,
                ship_province=d.province,
                expires_at=d.expires_at,
                committed=d.committed,
            )
        except InsufficientStock as shortage:
            short[d.order_id] = list(shortage.extra.get("skus", []))
    return short


# --- platform-side changes ---------------------------------------------------------------------


async def _case(
    session: AsyncSession,
    order_id: int,
    account: AccountRef,
    order: CanonicalOrder,
    type_: str,
    blocking: bool,
    **detail: Any,
) -> None:
    await exceptions_service.open_case_record(
        session,
        order_id=order_id,
        category="channel",
        type=type_,
        blocking=blocking,
        detail={
            "account": account.code,
            "external_id": order.external_id,
            "platform_status": order.status.value,
            "platform_updated_at": order.updated_at.isoformat(),
            **detail,
        },
    )


def _evidence(account: AccountRef, order: CanonicalOrder) -> str:
    return f"{account.platform}:{order.external_id}@{order.updated_at.isoformat()}"


async def _cancel(
    session: AsyncSession, account: AccountRef, order_no: str, order: CanonicalOrder
) -> None:
    """The buyer cancelled on the platform before paying: our cancel, by the buyer."""
    actor = Actor(
        ActorKind.BUYER,
        f"channel:{account.code}",
        evidence_ref=_evidence(account, order),
        note="cancelled on the platform",
    )
    await orders_service.transition(session, order_no, "cancel", actor)


async def _apply_change(
    session: AsyncSession,
    account: AccountRef,
    order: CanonicalOrder,
    hit: _Known,
    via: str,
    cipher: PiiCipher,
) -> None:
    """A newer version of a known order: map what changed, then remember this version."""
    current = await orders_service.get_order(session, hit.order_no)
    status = Status(current.status)
    address_hash = _address_hash(cipher, order)
    try:
        async with session.begin_nested():
            await _map_status(session, account, order, hit, current.id, status)
    except OrdertallyError as exc:
        # The state machine refused what the platform did: a person decides.
        await _case(
            session,
            current.id,
            account,
            order,
            "platform_change_refused",
            True,
            our_status=status.value,
            reason=exc.detail,
        )
    if hit.address_hash and address_hash != hit.address_hash:
        await _case(
            session,
            current.id,
            account,
            order,
            "address_changed",
            status in _UNSHIPPED,
            our_status=status.value,
            province=order.address.province,
            city=order.address.city,
            district=order.address.district,
        )
    values = {
        "platform_updated_at": order.updated_at,
        "raw_status": order.status.value,
        "address_hash": address_hash,
        "last_via": via,
        "updated_at": clock.now(),
    }
    if hit.platform_updated_at is None:
        await session.execute(
            _INSERT_LINKS,
            {
                "account_id": account.id,
                "external_id": order.external_id,
                "order_id": hit.order_id,
                "order_no": hit.order_no,
                "first_via": via,
                "created_at": clock.now(),
                **values,
            },
        )
    else:
        await session.execute(
            update(_LINK)
            .where(
                tuple_(_LINK.c.account_id, _LINK.c.external_id) == (account.id, order.external_id)
            )
            .values(**values)
        )
    await outbox.publish_rows(
        session, [_event_row(account, order, hit.order_id, hit.order_no, created=False)]
    )


async def _map_status(
    session: AsyncSession,
    account: AccountRef,
    order: CanonicalOrder,
    hit: _Known,
    order_id: int,
    status: Status,
) -> None:
    new = order.status
    if new.value == hit.raw_status:
        return
    if new is PlatformStatus.CANCELLED:
        if status is Status.PENDING_PAYMENT:
            await _cancel(session, account, hit.order_no, order)
        elif status is not Status.CLOSED:
            await _case(
                session,
                order_id,
                account,
                order,
                "platform_cancelled",
                status in _UNSHIPPED,
                our_status=status.value,
            )
    elif new is PlatformStatus.REFUNDED:
        if status not in (Status.REFUNDED, Status.CLOSED):
            await _case(
                session,
                order_id,
                account,
                order,
                "platform_refunded",
                status in _UNSHIPPED,
                our_status=status.value,
            )
    elif new in (PlatformStatus.PAID, PlatformStatus.SHIPPED, PlatformStatus.DELIVERED):
        if status is Status.PENDING_PAYMENT:
            await _paid_on_platform(session, account, order, hit, order_id)
        elif status is Status.CLOSED:
            await _case(
                session,
                order_id,
                account,
                order,
                "paid_after_close",
                True,
                our_status=status.value,
            )


async def _paid_on_platform(
    session: AsyncSession, account: AccountRef, order: CanonicalOrder, hit: _Known, order_id: int
) -> None:
    """The platform took the payment: payment_succeeded by channel_sync where the state machine
    allows it; otherwise a case for finance (the order must not time out meanwhile)."""
    actor = Actor(
        ActorKind.CHANNEL_SYNC, f"channel:{account.code}", evidence_ref=_evidence(account, order)
    )
    try:
        await orders_service.transition(session, hit.order_no, "payment_succeeded", actor)
    except ActorNotAllowed:
        await _case(
            session,
            order_id,
            account,
            order,
            "paid_on_platform",
            False,
            our_status=Status.PENDING_PAYMENT.value,
            action="confirm the payment (finance) / 请财务确认平台已收款",
        )
