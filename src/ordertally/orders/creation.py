"""The one way orders are created: a spec (an API request or a mapped platform order) is built
into rows by `build_order`, then written by `create_order` (one, with every answer) or
`create_many` (many, in a fixed number of statements: the API's group commit and channel
ingest).

Services receive a session and never commit; the caller's boundary does.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import orjson
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import service as catalog_service
from ordertally.catalog.errors import InactiveSku, UnknownSku
from ordertally.core import clock, ids, money, phones
from ordertally.core.crypto import PiiCipher, get_cipher
from ordertally.core.db import folded_inserts, read_together
from ordertally.core.errors import OrdertallyError
from ordertally.core.settings import Settings, get_settings
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.models import ExceptionCase
from ordertally.idempotency import service as idempotency_service
from ordertally.inventory import service as inventory_service
from ordertally.inventory.errors import InsufficientStock
from ordertally.orders import fx, repository, review
from ordertally.orders.contact import PII_ADDRESS, PII_NAME, PII_PHONE, mask_name
from ordertally.orders.errors import ActorNotAllowed, InvalidOrder, SuspectedDuplicate
from ordertally.orders.events import OrderCreated
from ordertally.orders.models import OrderLine, SalesOrder
from ordertally.orders.schemas import OrderCreate
from ordertally.orders.snapshot import OrderSnapshot, load_snapshot
from ordertally.orders.state_machine import CREATION, Actor, Event, Status
from ordertally.orders.transitions import audit_row

ORDERS_CREATED = Counter("ordertally_orders_created_total", "Orders created", ["channel"])


# --- the spec -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LineSpec:
    """One line as the order states it, in minor units of the order's currency."""

    sku: str
    quantity: int
    unit_price_minor: int
    discount_minor: int = 0  # the line's own discount; the order's is spread over the lines
    # How the duplicate fingerprint names the price: the API keeps the request's decimal string.
    price_key: str | int | None = None


@dataclass(frozen=True, slots=True)
class Personal:
    """A new order's personal data, already encrypted, blind-indexed and masked (one field per
    `sales_order` column): the mapping of each entry decides how its phones are read."""

    customer_name_enc: str
    customer_name_masked: str
    customer_phone_enc: str
    customer_phone_bidx: str
    customer_phone_masked: str
    customer_phone_last4: str
    shipping_address_enc: str
    ship_name_masked: str
    ship_phone_masked: str
    ship_province: str
    ship_city: str
    ship_district: str


@dataclass(frozen=True, slots=True)
class HoldSpec:
    """A blocking case a new order is created with (channel ingest: `sku_unmapped`)."""

    category: str
    type: str
    detail: dict[str, Any]


@dataclass(frozen=True, slots=True)
class OrderSpec:
    """Everything a new order is made of, whoever sends it."""

    channel: str
    external_id: str | None
    currency: str
    lines: tuple[LineSpec, ...]
    discount_minor: int
    personal: Personal
    actor: Actor
    initial: Event = Event.CREATE  # import_paid: a platform order the buyer already paid
    # Seconds a pending-payment order waits for its payment; None: the merchant's setting.
    payment_window_seconds: int | None = None
    check_fingerprint: bool = False  # keyless API requests: flag or refuse a recent twin
    hold_on_shortage: bool = False  # a shortage holds the order (else merchant policy)
    holds: tuple[HoldSpec, ...] = ()
    # What the buyer paid on top of the lines, in minor units of the order's currency.
    shipping_minor: int = 0
    tax_minor: int = 0  # tax charged on top of the prices (prices that include it: 0)
    fee_minor: int = 0  # platform fees the buyer paid (e.g. a cash-on-delivery fee)
    # Refuse codes the catalogue does not sell (channel ingest holds them as sku_unmapped).
    known_skus_only: bool = True


@dataclass(slots=True)
class BuiltOrder:
    """A new order's row and its lines' rows (without ids), computed before any statement."""

    target: Status
    values: dict[str, Any]
    lines: list[dict[str, Any]]


def fx_rate(
    settings: Settings, currency: str, rates: Mapping[str, Decimal] | None = None
) -> Decimal:
    """The rate from `currency` to the base currency (1 for the base itself): from `rates` (the
    rates in force, `orders.fx.rates_at`) or else the configured seed."""
    if currency == settings.base_currency:
        return Decimal(1)
    rate = (settings.fx_rates if rates is None else rates).get(currency)
    if rate is None or rate <= 0:
        raise money.FxRateUnavailable(
            f"no {currency}->{settings.base_currency} rate is configured", currency=currency
        )
    return money.quantize_rate(rate)


def _check_discount(discount: int, net: list[int]) -> None:
    if discount < 0:
        raise InvalidOrder("negative order discount", field="discount")
    if discount > sum(net):
        raise InvalidOrder("discount exceeds the order's subtotal", field="discount")


def _price_key(line: LineSpec) -> str | int:
    return line.unit_price_minor if line.price_key is None else line.price_key


async def catalog_facts(
    session: AsyncSession, specs: Iterable[OrderSpec]
) -> dict[str, catalog_service.LineFacts]:
    """The catalogue facts of every code of these specs: one read for a whole batch."""
    return await catalog_service.line_facts(
        session, {line.sku for spec in specs for line in spec.lines}
    )


def _check_codes(spec: OrderSpec, catalog: Mapping[str, catalog_service.LineFacts]) -> None:
    unknown = sorted({ln.sku for ln in spec.lines if ln.sku not in catalog})
    if unknown:
        raise UnknownSku(f"unknown SKU code {', '.join(unknown)}", skus=unknown)
    inactive = sorted({ln.sku for ln in spec.lines if not catalog[ln.sku].active})
    if inactive:
        raise InactiveSku(f"SKU {', '.join(inactive)} is no longer sold", skus=inactive)


@dataclass(frozen=True, slots=True)
class Amounts:
    """What an order's lines add up to, and its duplicate fingerprint (`price`)."""

    currency: str
    rate: Decimal
    gross: list[int]
    line_discounts: list[int]
    subtotal: int
    discount: int
    total: int
    fingerprint: str


def price(
    spec: OrderSpec, settings: Settings, rates: Mapping[str, Decimal] | None = None
) -> Amounts:
    """A spec's amounts (the order's discount spread over its lines by largest remainder),
    exchange rate and duplicate fingerprint, without the catalogue: the group commit takes
    the fingerprints' locks before its catalogue read returns. Pure; raises the amounts'
    validation errors."""
    currency = money.check_currency(spec.currency)
    rate = fx_rate(settings, currency, rates)
    gross = [line.unit_price_minor * line.quantity for line in spec.lines]
    line_discounts = [line.discount_minor for line in spec.lines]
    net = [g - d for g, d in zip(gross, line_discounts, strict=True)]
    _check_discount(spec.discount_minor, net)
    if any(net):
        spread = money.split_by_largest_remainder(spec.discount_minor, net)
        line_discounts = [d + extra for d, extra in zip(line_discounts, spread, strict=True)]
    subtotal = sum(gross)
    discount = sum(line_discounts)
    if min(spec.shipping_minor, spec.tax_minor, spec.fee_minor) < 0:
        raise InvalidOrder("negative shipping, tax or fee", field="shipping")
    total = subtotal - discount + spec.shipping_minor + spec.tax_minor + spec.fee_minor
    priced = sorted((line.sku, line.quantity, _price_key(line)) for line in spec.lines)
    fingerprint = hashlib.sha256(
        orjson.dumps([spec.channel, spec.personal.customer_phone_bidx, currency, total, priced])
    ).hexdigest()
    return Amounts(currency, rate, gross, line_discounts, subtotal, discount, total, fingerprint)


def build_order(
    spec: OrderSpec,
    settings: Settings,
    now: datetime,
    catalog: Mapping[str, catalog_service.LineFacts],
    rates: Mapping[str, Decimal] | None = None,
    amounts: Amounts | None = None,
) -> BuiltOrder:
    """The rows of a new order: amounts (`price`, or `amounts` when priced already), exchange
    rate, status, deadline, duplicate fingerprint and each line's snapshot of its SKU (from
    `catalog`, see `catalog_facts`). Pure; raises the order's validation errors, an unknown or
    inactive code among them unless `known_skus_only` is off."""
    target, creators = CREATION[spec.initial]
    if spec.actor.kind not in creators:
        raise ActorNotAllowed(f"{spec.actor.kind} may not {spec.initial} orders")
    if spec.known_skus_only:
        _check_codes(spec, catalog)
    if amounts is None:
        amounts = price(spec, settings, rates)
    currency, rate, total = amounts.currency, amounts.rate, amounts.total
    gross, line_discounts = amounts.gross, amounts.line_discounts
    personal = spec.personal
    window = spec.payment_window_seconds or settings.payment_timeout_seconds
    values: dict[str, Any] = {
        "order_no": ids.order_no(now),
        "channel": spec.channel,
        "external_id": spec.external_id,
        "status": target.value,
        "version": 1,
        "currency": currency,
        "subtotal_minor": amounts.subtotal,
        "discount_minor": amounts.discount,
        "total_minor": total,
        "base_currency": settings.base_currency,
        "fx_rate": str(rate),
        "shipping_minor": spec.shipping_minor,
        "tax_minor": spec.tax_minor,
        "fee_minor": spec.fee_minor,
        "base_total_minor": (
            total
            if currency == settings.base_currency
            else money.convert_minor(total, currency, rate, settings.base_currency)
        ),
        "customer_name_enc": personal.customer_name_enc,
        "customer_name_masked": personal.customer_name_masked,
        "customer_phone_enc": personal.customer_phone_enc,
        "customer_phone_bidx": personal.customer_phone_bidx,
        "customer_phone_masked": personal.customer_phone_masked,
        "customer_phone_last4": personal.customer_phone_last4,
        "shipping_address_enc": personal.shipping_address_enc,
        "ship_name_masked": personal.ship_name_masked,
        "ship_phone_masked": personal.ship_phone_masked,
        "ship_province": personal.ship_province,
        "ship_city": personal.ship_city,
        "ship_district": personal.ship_district,
        "fingerprint": amounts.fingerprint,
        "created_by": spec.actor.id,
        "waybill_nos": "",
        "payment_deadline_at": (
            now + timedelta(seconds=window) if target is Status.PENDING_PAYMENT else None
        ),
        "created_at": now,
        "updated_at": now,
    }
    lines = [
        {
            "line_no": n,
            "sku": line.sku,
            "quantity": line.quantity,
            "unit_price_minor": line.unit_price_minor,
            "discount_minor": line_discounts[n - 1],
            "total_minor": gross[n - 1] - line_discounts[n - 1],
            **_snapshot_of(catalog.get(line.sku)),
        }
        for n, line in enumerate(spec.lines, start=1)
    ]
    return BuiltOrder(target, values, lines)


def _snapshot_of(facts: catalog_service.LineFacts | None) -> dict[str, Any]:
    if facts is None:
        return {"sku_name": None, "sku_name_en": None, "sku_spec": None, "sku_barcode": None}
    return {
        "sku_name": facts.name,
        "sku_name_en": facts.name_en,
        "sku_spec": facts.spec,
        "sku_barcode": facts.barcode,
    }


def spec_of(
    cmd: OrderCreate,
    actor: Actor,
    *,
    check_fingerprint: bool,
    initial: Event = Event.CREATE,
    hold_on_shortage: bool = False,
    settings: Settings | None = None,
    cipher: PiiCipher | None = None,
    rates: Mapping[str, Decimal] | None = None,
) -> OrderSpec:
    """The spec of an API request: amounts to minor units, phones normalised to E.164, personal
    data encrypted under the orders' purposes; raises the request's validation errors."""
    settings = settings or get_settings()
    cipher = cipher or get_cipher()
    currency = money.check_currency(cmd.currency)
    lines = tuple(
        LineSpec(
            line.sku,
            line.quantity,
            money.to_minor(line.unit_price, currency),
            price_key=line.unit_price,
        )
        for line in cmd.lines
    )
    discount = money.to_minor(cmd.discount, currency)
    shipping = money.to_minor(cmd.shipping, currency)
    tax = money.to_minor(cmd.tax, currency)
    _check_discount(discount, [line.unit_price_minor * line.quantity for line in lines])
    fx_rate(settings, currency, rates)
    phone = phones.normalise(cmd.customer.phone)
    ship_phone = phones.normalise(cmd.shipping_address.phone)
    address = cmd.shipping_address
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
    personal = Personal(
        customer_name_enc=cipher.encrypt(cmd.customer.name, PII_NAME),
        customer_name_masked=mask_name(cmd.customer.name),
        customer_phone_enc=cipher.encrypt(phone, PII_PHONE),
        customer_phone_bidx=cipher.blind_index(phone, "phone"),
        customer_phone_masked=phones.mask(phone),
        customer_phone_last4=phones.last4(phone),
        shipping_address_enc=cipher.encrypt(address_doc, PII_ADDRESS),
        ship_name_masked=mask_name(address.name),
        ship_phone_masked=phones.mask(ship_phone),
        ship_province=address.province,
        ship_city=address.city,
        ship_district=address.district,
    )
    return OrderSpec(
        channel=cmd.channel,
        external_id=cmd.external_id,
        currency=cmd.currency,
        lines=lines,
        discount_minor=discount,
        personal=personal,
        actor=actor,
        initial=initial,
        check_fingerprint=check_fingerprint,
        hold_on_shortage=hold_on_shortage,
        shipping_minor=shipping,
        tax_minor=tax,
    )


def _created_event(order_id: int, values: dict[str, Any], line_count: int) -> dict[str, Any]:
    """The outbox row announcing a new order."""
    return outbox.build_row(
        "OrderCreated",
        OrderCreated(
            order_id=order_id,
            order_no=values["order_no"],
            channel=values["channel"],
            external_id=values["external_id"],
            status=values["status"],
            currency=values["currency"],
            total_minor=values["total_minor"],
            base_currency=values["base_currency"],
            fx_rate=values["fx_rate"],
            line_count=line_count,
            created_at=values["created_at"],
        ),
        aggregate_type="order",
        aggregate_id=values["order_no"],
    )


def count_created(channel: str, orders: int = 1) -> None:
    """Add committed (or committing) new orders to `ordertally_orders_created_total`."""
    ORDERS_CREATED.labels(channel).inc(orders)


# --- one order ----------------------------------------------------------------------------------


async def create_order(
    session: AsyncSession,
    cmd: OrderCreate,
    actor: Actor,
    *,
    check_fingerprint: bool,
    initial: str = Event.CREATE,
    hold_on_shortage: bool = False,
) -> tuple[OrderSnapshot, bool]:
    """Create an order (or return the one this channel already sent); True when created.

    A stock shortage refuses the order unless the merchant's policy (or `hold_on_shortage`, for
    orders a platform already took from the buyer) creates it on hold instead.
    """
    settings = get_settings()
    if cmd.external_id is not None:
        existing = await repository.get_by_external(session, cmd.channel, cmd.external_id)
        if existing is not None:
            return await load_snapshot(session, existing), False
    event = Event(initial)
    target, creators = CREATION[event]
    if actor.kind not in creators:
        raise ActorNotAllowed(f"{actor.kind} may not {initial} orders")
    now = clock.now()
    rates = await fx.rates_at(session, settings, now)
    spec = spec_of(
        cmd,
        actor,
        check_fingerprint=check_fingerprint,
        initial=event,
        hold_on_shortage=hold_on_shortage,
        settings=settings,
        rates=rates,
    )
    built = build_order(spec, settings, now, await catalog_facts(session, [spec]), rates)
    values = built.values
    fingerprint = values["fingerprint"]

    duplicate_of: SalesOrder | None = None
    if check_fingerprint and settings.duplicate_window_seconds > 0:
        since = now - timedelta(seconds=settings.duplicate_window_seconds)
        # Atomic across processes: a twin in flight commits before we look (ADR 0025).
        await repository.lock_fingerprints(session, [fingerprint])
        duplicate_of = await repository.find_recent_by_fingerprint(session, fingerprint, since)
        if duplicate_of is not None and settings.duplicate_policy == "reject":
            raise SuspectedDuplicate(
                f"order {duplicate_of.order_no} has the same customer, lines and amount",
                duplicate_of=duplicate_of.order_no,
            )

    order_id = await repository.insert_order(session, values)
    await repository.insert_fingerprints(
        session, [{"order_id": order_id, "fingerprint": fingerprint, "created_at": now}]
    )
    line_rows = [{"order_id": order_id, **row} for row in built.lines]
    line_ids = await repository.insert_lines(session, line_rows)
    lines = [OrderLine(id=i, **row) for i, row in zip(line_ids, line_rows, strict=True)]
    holds: list[ExceptionCase] = []
    reserved = await _reserve_new_order(
        session,
        order_id,
        [inventory_service.LineDemand(ln.id, ln.line_no, ln.sku, ln.quantity) for ln in lines],
        values["ship_province"],
        values["payment_deadline_at"],
        committed=target is Status.PAID,
        holds=holds,
        hold=hold_on_shortage or settings.stock_shortage_policy == "hold",
    )
    await repository.insert_event(
        session, audit_row(order_id, 1, event, None, target.value, actor, now)
    )
    await outbox.publish_rows(session, [_created_event(order_id, values, len(cmd.lines))])
    if duplicate_of is not None:
        holds.append(
            await exceptions_service.open_case_record(
                session,
                order_id=order_id,
                category="order",
                type="suspected_duplicate",
                blocking=True,
                detail={
                    "duplicate_of": duplicate_of.order_no,
                    "window_seconds": settings.duplicate_window_seconds,
                },
            )
        )
    order = SalesOrder(id=order_id, **values)
    if target is Status.PAID:
        await review.review_paid(session, [order])
    inventory = inventory_service.view_of_new(reserved, {ln.id: ln.line_no for ln in lines})
    return OrderSnapshot(order, lines, holds, inventory), True


async def _reserve_new_order(
    session: AsyncSession,
    order_id: int,
    lines: list[inventory_service.LineDemand],
    ship_province: str,
    deadline: datetime | None,
    *,
    committed: bool,
    holds: list[ExceptionCase],
    hold: bool,
) -> inventory_service.Reserved | None:
    """Reserve stock for a new order; a shortage refuses it, or holds it by merchant policy."""
    try:
        return await inventory_service.reserve_for_order(
            session,
            order_id=order_id,
            lines=lines,
            ship_province=ship_province,
            expires_at=inventory_service.reservation_expiry(deadline),
            committed=committed,
        )
    except InsufficientStock as shortage:
        if not hold:
            raise
        holds.append(await _shortage_hold(session, order_id, shortage.extra.get("skus", [])))
        return None


async def _shortage_hold(
    session: AsyncSession, order_id: int, skus: list[dict[str, Any]]
) -> ExceptionCase:
    return await exceptions_service.open_case_record(
        session,
        order_id=order_id,
        category="inventory",
        type="stock_shortage",
        blocking=True,
        detail={"skus": skus},
    )


# --- many orders --------------------------------------------------------------------------------


@dataclass(slots=True)
class Created:
    """One order `create_many` wrote: its row and its lines' rows (with ids), the holds it was
    created with and its reservation (None: short of stock)."""

    order_id: int
    values: dict[str, Any]
    lines: list[dict[str, Any]]
    holds: list[ExceptionCase]
    reserved: inventory_service.Reserved | None

    def snapshot(self) -> OrderSnapshot:
        """The order's JSON material, as `create_order` returns it. The rows just written are
        read through `Written`, not built into mapped objects: the ORM's constructor sets each
        of ~60 columns through its instrumentation, which cost more CPU per order than the
        rest of the response (issue 21's profile of the group commit)."""
        lines = [Written(row) for row in self.lines]
        inventory = inventory_service.view_of_new(
            self.reserved, {row["id"]: row["line_no"] for row in self.lines}
        )
        order = Written({"id": self.order_id, **self.values})
        return OrderSnapshot(
            cast(SalesOrder, order), cast(list[OrderLine], lines), self.holds, inventory
        )


class Written:
    """A row just written, read by attribute like its mapped object (a column left unset reads
    None, as on a new mapped object), for rendering only: never added to a session."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self.__dict__.update(values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return None


@dataclass(slots=True)
class CreatedMany:
    """What `create_many` did, per spec in order: the order written, None (group commit: left
    to `create_order`) or the validation error that refused it (ingest); and the stock still
    to take with `take_batch_stock` (group commit), last before COMMIT."""

    outcomes: list[Created | OrdertallyError | None]
    stock: dict[int, int]


class BatchRaced(Exception):
    """A stock row no longer had the units a batch planned; its transaction must roll back."""


async def create_many(
    session: AsyncSession,
    specs: list[OrderSpec],
    *,
    defer_unusual: bool,
    keys: list[tuple[str, str] | None] | None = None,
) -> CreatedMany:
    """Create many new orders in one transaction with a fixed number of statements: the
    catalogue, idempotency keys, known external ids, recent fingerprints, availability and
    new ids read in two statements on PostgreSQL (`read_together`), then multi-row INSERTs of
    orders, lines, audit rows, events, reservations and allocations (in the group commit, one
    folded statement with the caller's stored responses and stock UPDATE: ADR 0057).

    `defer_unusual=True` (the API's group commit) creates only the plain case: a spec whose
    channel already sent its external id, that may duplicate a recent order, that is invalid
    or short of stock, that repeats an earlier spec of the batch, or whose idempotency key
    (`keys`, one per spec) the batch may not claim (`idempotency.service.claim`) gets None,
    and the caller runs `create_order` for it after this transaction commits, which answers
    exactly as it always does. The stock rows are not taken here: the caller calls
    `take_batch_stock` last before COMMIT.

    `defer_unusual=False` (channel ingest) creates every valid spec: a shortage opens a
    blocking `stock_shortage` case, the spec's own holds are opened and an invalid spec gets
    its error. The caller has read which external ids are known: one written meanwhile by
    another transaction fails the INSERT on the unique constraint (IntegrityError), and the
    caller reads again. The stock is taken at once (a savepoint; if another writer moved a row,
    order by order). Fingerprints are not checked in this mode.
    """
    settings = get_settings()
    now = clock.now()
    rates = await fx.rates_at(session, settings, now, [spec.currency for spec in specs])
    outcomes: list[Created | OrdertallyError | None] = [None] * len(specs)
    built: list[BuiltOrder | None] = []
    keyed: list[tuple[str, str] | None] = list(keys) if keys is not None else [None] * len(specs)
    if not defer_unusual and keys is not None:
        raise ValueError("ingest mode claims no idempotency keys")
    amounts: list[Amounts | None] = (
        _price_checked(specs, settings, rates) if defer_unusual else [None] * len(specs)
    )
    # The key and fingerprint locks ride with the catalogue's read; what they guard (stored
    # responses, recent fingerprints) is read by the next statement, whose snapshot sees what
    # a lock waited for (ADR 0025, ADR 0057).
    free, catalog, _ = await read_together(
        session,
        idempotency_service.claim_locks(session, keyed),
        catalog_service.line_facts_read(session, {ln.sku for spec in specs for ln in spec.lines}),
        repository.fingerprint_locks(session, _checked_fingerprints(specs, amounts, settings)),
    )
    for index, spec in enumerate(specs):
        if not defer_unusual and (spec.check_fingerprint or not spec.hold_on_shortage):
            raise ValueError("ingest mode creates every order: no fingerprints, shortages hold")
        if defer_unusual and amounts[index] is None:
            built.append(None)  # invalid amounts: create_order raises the error on its own
            continue
        try:
            built.append(build_order(spec, settings, now, catalog, rates, amounts[index]))
        except OrdertallyError as exc:
            built.append(None)  # group commit: create_order raises it in its own transaction
            if not defer_unusual:
                outcomes[index] = exc
        except (ValueError, ArithmeticError):
            if not defer_unusual:
                raise
            built.append(None)
    candidates, fresh = None, None
    if defer_unusual:
        candidates, fresh = await _leave_unusual(session, specs, built, keyed, free, settings, now)

    planned = [i for i, b in enumerate(built) if b is not None]
    demands = []
    for i in planned:
        b = built[i]
        assert b is not None
        demand: dict[str, int] = {}
        for row in b.lines:
            demand[row["sku"]] = demand.get(row["sku"], 0) + row["quantity"]
        demands.append(inventory_service.BulkDemand(demand, b.values["ship_province"]))
    bundles = {code for code, facts in catalog.items() if facts.is_bundle}
    bulk = await inventory_service.plan_bulk(session, demands, bundles, candidates)
    plan_of = {i: n for n, i in enumerate(planned)}
    chosen = [i for n, i in enumerate(planned) if not (defer_unusual and n in bulk.shortfall)]
    if not chosen:
        return CreatedMany(outcomes, {})
    rows = [built[i].values for i in chosen]  # type: ignore[union-attr]
    order_lines = [built[i].lines for i in chosen]  # type: ignore[union-attr]
    if fresh is None:
        order_ids, line_ids = await repository.insert_orders_with_lines(session, rows, order_lines)
    else:
        # Ids drawn by the batch's read: the rows go with the folded INSERTs (ADR 0057)
        drawn_orders, drawn_lines = iter(fresh[0]), iter(fresh[1])
        order_ids = [next(drawn_orders) for _ in rows]
        line_ids = [[next(drawn_lines) for _ in lines] for lines in order_lines]
        await repository.add_orders_with_lines(session, rows, order_lines, order_ids, line_ids)
    lines_of: dict[int, list[dict[str, Any]]] = {}
    stock: list[inventory_service.NewOrderStock] = []
    for i, order_id, ids_of_lines in zip(chosen, order_ids, line_ids, strict=True):
        b = built[i]
        assert b is not None
        lines = lines_of[i] = [
            {"order_id": order_id, **line, "id": line_id}
            for line, line_id in zip(b.lines, ids_of_lines, strict=True)
        ]
        stock.append(
            inventory_service.NewOrderStock(
                plan_of[i],
                order_id,
                [
                    inventory_service.LineDemand(ln["id"], ln["line_no"], ln["sku"], ln["quantity"])
                    for ln in lines
                ],
                b.values["ship_province"],
                inventory_service.reservation_expiry(b.values["payment_deadline_at"]),
                b.target is Status.PAID,
            )
        )
    # The group commit's plain INSERTs from here on (fingerprints, reservations, allocations,
    # audit rows, outbox events and what their publish hooks add) go as one statement on
    # PostgreSQL: nothing below reads them back (ADR 0055). Channel ingest takes its stock in a
    # savepoint: at once.
    fold = folded_inserts(session) if defer_unusual else contextlib.nullcontext()
    async with fold:
        await repository.insert_fingerprints(
            session,
            [
                {"order_id": order_id, "fingerprint": row["fingerprint"], "created_at": now}
                for order_id, row in zip(order_ids, rows, strict=True)
            ],
        )
        reservation = await inventory_service.reserve_new_orders(
            session, bulk, stock, take_now=not defer_unusual
        )
        audit: list[dict[str, Any]] = []
        events: list[dict[str, Any]] = []
        for i, order_id in zip(chosen, order_ids, strict=True):
            b = built[i]
            assert b is not None
            spec = specs[i]
            holds = [
                await exceptions_service.open_case_record(
                    session,
                    order_id=order_id,
                    category=hold.category,
                    type=hold.type,
                    blocking=True,
                    detail=hold.detail,
                )
                for hold in spec.holds
            ]
            if order_id in reservation.short:
                holds.append(await _shortage_hold(session, order_id, reservation.short[order_id]))
            audit.append(
                audit_row(order_id, 1, spec.initial, None, b.target.value, spec.actor, now)
            )
            events.append(_created_event(order_id, b.values, len(b.lines)))
            outcomes[i] = Created(
                order_id,
                b.values,
                lines_of[i],
                holds,
                reservation.reserved.get(order_id),
            )
        await repository.insert_events(session, audit)
        await outbox.publish_rows(session, events)
    created_paid = [
        SalesOrder(id=order_id, **built[i].values)  # type: ignore[union-attr]
        for i, order_id in zip(chosen, order_ids, strict=True)
        if built[i].target is Status.PAID  # type: ignore[union-attr]
    ]
    if created_paid:
        await review.review_paid(session, created_paid)
    return CreatedMany(outcomes, reservation.totals)


def _price_checked(
    specs: list[OrderSpec], settings: Settings, rates: Mapping[str, Decimal]
) -> list[Amounts | None]:
    """Group commit: each spec's amounts and fingerprint before any read (None: invalid, left
    to `create_order`, which raises its error)."""
    amounts: list[Amounts | None] = []
    for spec in specs:
        try:
            amounts.append(price(spec, settings, rates))
        except (OrdertallyError, ValueError, ArithmeticError):
            amounts.append(None)
    return amounts


def _checked_fingerprints(
    specs: list[OrderSpec], amounts: list[Amounts | None], settings: Settings
) -> list[str]:
    """The fingerprints the duplicate check looks up (keyless requests, a window set)."""
    if settings.duplicate_window_seconds <= 0:
        return []
    return [
        a.fingerprint
        for a, spec in zip(amounts, specs, strict=True)
        if a is not None and spec.check_fingerprint
    ]


async def _leave_unusual(
    session: AsyncSession,
    specs: list[OrderSpec],
    built: list[BuiltOrder | None],
    keys: list[tuple[str, str] | None],
    free: set[tuple[str, str]],
    settings: Settings,
    now: datetime,
) -> tuple[list[Any], tuple[list[int], list[int]] | None]:
    """Group commit: set to None every built order the batch must leave to `create_order`,
    i.e. a key this batch may not claim (`free`: the keys `claim_locks` took), a known external
    id, a possible duplicate of a recent order, or a repeat of an earlier order of the batch;
    returns the stock rows to plan the rest over and ids for their orders and lines
    (PostgreSQL). Its reads ride together in one statement, after the one that took the key
    and fingerprint locks (ADR 0025)."""
    checking = settings.duplicate_window_seconds > 0
    fingerprints = [
        b.values["fingerprint"]
        for b, spec in zip(built, specs, strict=True)
        if checking and b is not None and spec.check_fingerprint
    ]
    stored, known, recent, candidates, fresh = await read_together(
        session,
        idempotency_service.claim_stored(session, free),
        repository.externals_read(
            session,
            [
                (b.values["channel"], b.values["external_id"])
                for b in built
                if b is not None and b.values["external_id"] is not None
            ],
        ),
        repository.recent_fingerprints_read(
            session, fingerprints, now - timedelta(seconds=settings.duplicate_window_seconds)
        ),
        inventory_service.candidates_read(
            session, {row["sku"] for b in built if b is not None for row in b.lines}
        ),
        repository.new_ids(
            session,
            sum(1 for b in built if b is not None),
            sum(len(b.lines) for b in built if b is not None),
        ),
    )
    go = idempotency_service.claimed(keys, free - stored)
    seen_fingerprints: set[str] = set()
    for index, (b, spec) in enumerate(zip(built, specs, strict=True)):
        if b is None:
            continue
        pair = (b.values["channel"], b.values["external_id"])
        fingerprint = b.values["fingerprint"]
        if (
            not go[index]
            or (b.values["external_id"] is not None and pair in known)
            or (
                checking
                and spec.check_fingerprint
                and (fingerprint in recent or fingerprint in seen_fingerprints)
            )
        ):
            built[index] = None
            continue
        if b.values["external_id"] is not None:
            known.add(pair)  # a second request of the batch for it returns the first's order
        seen_fingerprints.add(fingerprint)
    return list(candidates), fresh


async def take_batch_stock(session: AsyncSession, batch: CreatedMany) -> None:
    """Take the stock a batch reserved (the conditional UPDATEs, in stock id order); raises
    BatchRaced when a row no longer has it. Run it last before COMMIT: the hot rows stay
    locked only for the COMMIT. In a `folded_inserts` block (the group commit's) it is the
    block's last statement, sent with its INSERTs when the block ends, BatchRaced raised then."""
    await inventory_service.take_bulk_last(session, batch.stock, BatchRaced)
