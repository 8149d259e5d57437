"""Customer use cases: link orders to one customer across channels, merge customers that turn
out to be one person, recompute the 90-day profile of the customers an event touched, record
the risk flags rules raise, tags and lookups. Services receive a session and never commit.

Identity rule. An order is linked by two keys: the blind index of its buyer's phone (only when
the stored phone is a real, valid number; platform-masked phones such as `138****1234` are not
identifying) and, for platforms that mask phones, (platform, buyer id) from
ChannelOrderIngested. Every customer these keys (and the order's current link) point at is the
same person: when there are several, the oldest customer (lowest id) survives and the others
are merged into it — their identities, orders, flags and tags move to the survivor, their
profile is dropped, and the merged row keeps `merged_into_id` so that old ids still resolve.
An order whose phone is masked and whose buyer id is not known yet gets a customer of its own,
merged as soon as an identity links it to someone.

Risk flags are raised by rules (the built-in `builtin.discount_over_80` and
`builtin.same_item_burst`, on by default) through `raise_flag`; nothing here decides them.

Every step reads the order's current row and writes absolute values, so applying the same event
twice (a replay) changes nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any

import phonenumbers
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import service as channels_service
from ordertally.core import clock, money, phones
from ordertally.core.crypto import get_cipher
from ordertally.core.settings import get_settings
from ordertally.customers import repository
from ordertally.customers.errors import (
    CustomerNotFound,
    CustomerOutOfScope,
    LookupRequired,
    TagNotFound,
)
from ordertally.customers.models import FLAG_KINDS as FLAG_KIND_NAMES
from ordertally.customers.models import Customer, CustomerFlag, CustomerIdentity, CustomerOrder
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import queries as orders_queries
from ordertally.orders import service as orders_service

if TYPE_CHECKING:
    from ordertally.orders.models import OrderLine, SalesOrder

# Statuses in which an order counts as bought (paid and not given back).
BOUGHT = frozenset(
    {"paid", "allocated", "fulfilling", "shipped", "delivered", "completed", "partially_refunded"}
)
# After-sales case types that count as a return in the profile (issue 18).
RETURN_CASE_TYPES = frozenset({"return_refund", "refused", "exchange"})
# Statuses in which an order has no return or refund to count (before shipment).
_NOT_RETURNED = frozenset({"pending_payment", "paid", "allocated", "fulfilling", "closed"})
REFUNDED = "refunded"
PHONE = "phone_bidx"
BUYER = "platform_buyer"
MAX_MERGE_HOPS = 16


@dataclass(frozen=True, slots=True)
class BuyerId:
    """A platform's stable id of a buyer (for platforms that mask phones)."""

    platform: str
    buyer_id: str


def buyer_key(buyer: BuyerId) -> str:
    """The blind index of a platform buyer id (the id is personal data too)."""
    return get_cipher().blind_index(f"{buyer.platform}:{buyer.buyer_id}", "platform_buyer")


def mask_buyer_id(buyer_id: str) -> str:
    """Keep the first and last two characters: `tb_8812345` -> `tb******45`."""
    if len(buyer_id) <= 4:
        return buyer_id[:1] + "*" * (len(buyer_id) - 1)
    return buyer_id[:2] + "*" * (len(buyer_id) - 4) + buyer_id[-2:]


def _identifying_phone(order: SalesOrder) -> bool:
    """Whether the order's stored phone is a real number (not a platform's masked form)."""
    try:
        e164 = get_cipher().decrypt(order.customer_phone_enc, orders_service.PII_PHONE)
        return bool(phonenumbers.is_valid_number(phonenumbers.parse(e164)))
    except (ValueError, phonenumbers.NumberParseException):
        return False


def to_base_minor(order: SalesOrder) -> int:
    """The order's total in minor units of the base currency, at the rate locked at creation."""
    if order.currency == order.base_currency:
        return order.total_minor
    amount = money.from_minor(order.total_minor, order.currency) * Decimal(order.fx_rate)
    scaled = amount.scaleb(money.exponent(order.base_currency))
    return int(scaled.to_integral_value(rounding=ROUND_HALF_EVEN))


async def resolve(session: AsyncSession, customer_id: int) -> Customer:
    """The live customer an id stands for (following merges), or CustomerNotFound."""
    customer = await repository.get_customer(session, customer_id)
    for _ in range(MAX_MERGE_HOPS):
        if customer is None or customer.merged_into_id is None:
            break
        customer = await repository.get_customer(session, customer.merged_into_id)
    if customer is None or customer.merged_into_id is not None:
        raise CustomerNotFound(f"customer {customer_id} does not exist")
    return customer


async def merge(session: AsyncSession, loser_id: int, survivor_id: int) -> None:
    """Merge one customer into another: the survivor takes everything the loser owned."""
    now = clock.now()
    await repository.move_owned_rows(session, loser_id, survivor_id)
    await repository.update_customer(
        session, loser_id, {"merged_into_id": survivor_id, "updated_at": now}
    )


async def _attach_identity(
    session: AsyncSession, customer_id: int, kind: str, value: str, platform: str, masked: str
) -> int:
    """Give a customer an identity; returns the customer that owns it afterwards (another one
    when a concurrent worker attached it first — the caller merges)."""
    inserted = await repository.insert_identity_if_absent(
        session,
        {
            "customer_id": customer_id,
            "kind": kind,
            "value": value,
            "platform": platform,
            "masked": masked,
            "created_at": clock.now(),
        },
    )
    if inserted:
        return customer_id
    identity = await repository.find_identity(session, kind, value)
    assert identity is not None
    return identity.customer_id


async def link_order(
    session: AsyncSession,
    order_no: str,
    *,
    buyer: BuyerId | None = None,
    categories: list[str] | None = None,
    placed_at: datetime | None = None,
    event_at: datetime | None = None,
    returned_at: datetime | None = None,
) -> int:
    """Link an order to its customer (creating or merging customers), refresh the order's
    figures and flags, and recompute that customer's profile; returns the customer id.
    `returned_at`: when an after-sales return of the order was opened (counted once)."""
    order = await orders_service.get_order(session, order_no)
    existing = await repository.get_customer_order(session, order.id)
    identifying = _identifying_phone(order)
    keys: list[tuple[str, str, str, str]] = []  # kind, value, platform, masked
    if identifying:
        keys.append((PHONE, order.customer_phone_bidx, "", order.customer_phone_masked))
    if buyer is not None and buyer.buyer_id:
        keys.append(
            (
                BUYER,
                buyer_key(buyer),
                buyer.platform,
                f"{buyer.platform}:{mask_buyer_id(buyer.buyer_id)}",
            )
        )

    candidates: set[int] = set()
    if existing is not None:
        candidates.add((await resolve(session, existing.customer_id)).id)
    for kind, value, _, _ in keys:
        identity = await repository.find_identity(session, kind, value)
        if identity is not None:
            candidates.add((await resolve(session, identity.customer_id)).id)

    now = clock.now()
    if candidates:
        customer_id = min(candidates)
    else:
        customer_id = await repository.insert_customer(
            session,
            {
                "name_masked": order.customer_name_masked,
                "phone_masked": order.customer_phone_masked if identifying else "",
                "merged_into_id": None,
                "created_at": now,
                "updated_at": now,
            },
        )
    for kind, value, platform, masked in keys:
        owner = await _attach_identity(session, customer_id, kind, value, platform, masked)
        if owner != customer_id:
            candidates.add((await resolve(session, owner)).id)
            candidates.add(customer_id)
            customer_id = min(candidates)
    for other in sorted(candidates - {customer_id}):
        await merge(session, other, customer_id)
    if identifying:
        await repository.update_customer(
            session,
            customer_id,
            {
                "name_masked": order.customer_name_masked,
                "phone_masked": order.customer_phone_masked,
                "updated_at": now,
            },
        )

    lines = await orders_service.lines_of(session, order)
    values = _order_values(
        order,
        existing,
        customer_id,
        lines,
        now=now,
        event_at=event_at,
        placed_at=placed_at,
        categories=categories,
        returned_at=returned_at,
    )
    await repository.save_customer_order(session, values)
    await recompute_profile(session, customer_id)
    return customer_id


def _order_values(
    order: SalesOrder,
    existing: CustomerOrder | None,
    customer_id: int,
    lines: list[OrderLine],
    *,
    now: datetime,
    event_at: datetime | None,
    placed_at: datetime | None = None,
    categories: list[str] | None = None,
    returned_at: datetime | None = None,
) -> dict[str, Any]:
    """The customer's copy of an order (absolute values from the order's current row)."""
    refunded_at = existing.refunded_at if existing is not None else None
    if returned_at is not None and refunded_at is None:
        refunded_at = clock.as_utc(returned_at)  # an after-sales return case was opened
    if order.status == REFUNDED and refunded_at is None:
        refunded_at = event_at or now
    if order.status in _NOT_RETURNED:
        refunded_at = None
    if placed_at is None:
        placed_at = existing.placed_at if existing is not None else order.created_at
    if categories is None:
        categories = existing.categories if existing is not None else []
    return {
        "order_id": order.id,
        "order_no": order.order_no,
        "customer_id": customer_id,
        "channel": order.channel,
        "placed_at": clock.as_utc(placed_at),
        "amount_minor": to_base_minor(order),
        "currency": order.base_currency,
        "skus": sorted({line.sku for line in lines}),
        "categories": sorted({c for c in categories if c}),
        "status": order.status,
        "refunded_at": refunded_at,
        "updated_at": now,
    }


async def link_orders(session: AsyncSession, events: dict[str, datetime | None]) -> None:
    """`link_order` for many orders at once (order number -> the time of its latest event):
    the same rows as linking them one by one, with one query per table for the whole batch
    instead of ~14 per order (issue 21: the workers were the chain's bottleneck).

    An order whose keys point at two customers, or at a merged one, needs a merge; an order
    whose phone another worker attached to someone else meanwhile needs one too. Those take
    `link_order`, one by one, after the others are written."""
    orders = sorted(await orders_service.get_orders(session, list(events)), key=lambda o: o.id)
    if not orders:
        return
    now = clock.now()
    existing = {
        c.order_id: c for c in await repository.customer_orders_of(session, [o.id for o in orders])
    }
    phone_of = {o.id: o.customer_phone_bidx for o in orders if _identifying_phone(o)}
    masked_of: dict[str, str] = {}  # each phone as its first order in the batch shows it
    for o in orders:
        if o.id in phone_of:
            masked_of.setdefault(phone_of[o.id], o.customer_phone_masked)
    owners = await repository.identity_owners(session, PHONE, sorted(set(phone_of.values())))
    known = await repository.get_customers(
        session, sorted({c.customer_id for c in existing.values()} | set(owners.values()))
    )
    # Customers are referred to by id, or by -n for the n-th customer this batch creates.
    new_rows: list[dict[str, Any]] = []
    claimed: dict[str, int] = {}  # phones this batch attaches, to the customer they go to
    chosen: dict[int, int] = {}
    slow: list[SalesOrder] = []
    for order in orders:
        link = existing.get(order.id)
        phone = phone_of.get(order.id)
        candidates = {link.customer_id} if link is not None else set()
        if phone is not None and (owner := owners.get(phone, claimed.get(phone))) is not None:
            candidates.add(owner)
        live = all(c < 0 or (c in known and known[c].merged_into_id is None) for c in candidates)
        if len(candidates) > 1 or not live:
            slow.append(order)
            continue
        if candidates:
            ref = candidates.pop()
        else:
            new_rows.append(
                {
                    "name_masked": order.customer_name_masked,
                    "phone_masked": order.customer_phone_masked if phone is not None else "",
                    "merged_into_id": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            ref = -len(new_rows)
        chosen[order.id] = ref
        if phone is not None:
            claimed.setdefault(phone, ref)
            if ref < 0:  # the latest identifying order names a new customer
                new_rows[-ref - 1]["name_masked"] = order.customer_name_masked
                new_rows[-ref - 1]["phone_masked"] = order.customer_phone_masked
    ids = await repository.insert_customers(session, new_rows)

    def real(ref: int) -> int:
        return ids[-ref - 1] if ref < 0 else ref

    attach = [
        {
            "customer_id": real(ref),
            "kind": PHONE,
            "value": phone,
            "platform": "",
            "masked": masked_of[phone],
            "created_at": now,
        }
        for phone, ref in sorted(claimed.items())
        if phone not in owners
    ]
    attached = await repository.insert_identities_if_absent(session, attach)
    lost = {row["value"] for row in attach} - attached  # another worker attached it first
    renamed: dict[int, dict[str, Any]] = {}
    for order in orders:
        if order.id in chosen and chosen[order.id] > 0 and order.id in phone_of:
            renamed[chosen[order.id]] = {
                "id": chosen[order.id],
                "name_masked": order.customer_name_masked,
                "phone_masked": order.customer_phone_masked,
                "updated_at": now,
            }
    await repository.update_customers(session, list(renamed.values()))
    linked = [o for o in orders if o.id in chosen]
    lines = await orders_service.lines_of_orders(session, [o.id for o in linked])
    await repository.save_customer_orders(
        session,
        [
            _order_values(
                o,
                existing.get(o.id),
                real(chosen[o.id]),
                lines[o.id],
                now=now,
                event_at=events[o.order_no],
            )
            for o in linked
        ],
    )
    await recompute_profiles(session, sorted({real(ref) for ref in chosen.values()}))
    again = {o.id for o in slow}
    for order in orders:
        if order.id in again or phone_of.get(order.id) in lost:
            await link_order(session, order.order_no, event_at=events[order.order_no])


# --- risk flags ----------------------------------------------------------------------------------

# The flags a rule can raise on a buyer (the `customer_flag` rule action; ADR 0034 addendum).
FLAG_KINDS: tuple[str, ...] = FLAG_KIND_NAMES


async def raise_flag(
    session: AsyncSession,
    order_id: int,
    kind: str,
    detail: dict[str, Any],
    *,
    blocking: bool,
) -> dict[str, Any]:
    """Flag an order's buyer once per (order, kind): the flag joins their profile's risk flags
    and opens its exception case (`customer.<kind>`, holding the order when `blocking`). The
    built-in rules raise the two flags (they were hard-coded here before); returns what was
    done."""
    linked = await repository.get_customer_order(session, order_id)
    if linked is None:
        return {"flagged": False, "reason": "buyer not linked yet"}
    customer = await resolve(session, linked.customer_id)
    flag_id = await repository.insert_flag_if_absent(
        session,
        {
            "customer_id": customer.id,
            "order_id": order_id,
            "kind": kind,
            "detail": detail,
            "case_id": None,
            "created_at": clock.now(),
        },
    )
    if flag_id is None:
        return {"flagged": False, "reason": "already flagged", "customer_id": customer.id}
    case = await exceptions_service.open_case_record(
        session,
        order_id=order_id,
        category="risk",
        type=f"customer.{kind}",
        blocking=blocking,
        detail={"customer_id": customer.id, **detail},
    )
    await repository.set_flag_case(session, flag_id, case.id)
    await recompute_profile(session, customer.id)
    return {"flagged": True, "customer_id": customer.id, "case_id": case.id, "blocking": blocking}


# --- profile -------------------------------------------------------------------------------------


def _favourites(orders: list[CustomerOrder], n: int) -> list[str]:
    counts: Counter[str] = Counter()
    for order in orders:
        counts.update(order.categories)
    return [c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]]


def compute_figures(
    orders: list[CustomerOrder], flags: list[CustomerFlag], now: datetime, base_currency: str
) -> dict[str, Any]:
    """The profile's figures as of `now`, from the customer's orders and flags (pure)."""
    settings = get_settings()
    days = timedelta(days=settings.customers_profile_days)
    returns_days = timedelta(days=settings.customers_returns_days)
    since, returns_since = now - days, now - returns_days
    in_window = [
        o
        for o in orders
        if clock.as_utc(o.placed_at) >= since and (o.status in BOUGHT or o.status == REFUNDED)
    ]
    bought = [o for o in in_window if o.status in BOUGHT]
    returns = [
        o
        for o in orders
        if o.refunded_at is not None and clock.as_utc(o.refunded_at) >= returns_since
    ]
    recent_flags = [f for f in flags if clock.as_utc(f.created_at) >= since]
    spend = sum(o.amount_minor for o in bought)
    aov = (2 * spend + len(bought)) // (2 * len(bought)) if bought else 0
    # The next moment a figure changes by time alone: an order, a return or a flag ageing out.
    edges = [clock.as_utc(o.placed_at) + days for o in in_window]
    edges += [clock.as_utc(o.refunded_at) + returns_days for o in returns if o.refunded_at]
    edges += [clock.as_utc(f.created_at) + days for f in recent_flags]
    return {
        "orders_90d": len(in_window),
        "spend_90d_minor": spend,
        "aov_90d_minor": aov,
        "currency": base_currency,
        "returns_30d": len(returns),
        "channels": sorted({o.channel for o in in_window}),
        "favourite_categories": _favourites(bought, settings.customers_favourite_categories),
        "risk_flags": sorted({f.kind for f in recent_flags}),
        "last_order_at": max((clock.as_utc(o.placed_at) for o in orders), default=None),
        "next_ageing_at": min(edges, default=None),
    }


async def recompute_profile(session: AsyncSession, customer_id: int) -> None:
    """Recompute one customer's figures from their own order rows (incremental by customer)."""
    await recompute_profiles(session, [customer_id])


async def recompute_profiles(session: AsyncSession, customer_ids: list[int]) -> None:
    """Recompute some customers' figures from their own order rows (one query per table)."""
    if not customer_ids:
        return
    settings = get_settings()
    now = clock.now()
    since = now - timedelta(days=settings.customers_profile_days)
    returns_since = now - timedelta(days=settings.customers_returns_days)
    orders = await repository.orders_for_profiles(session, customer_ids, since, returns_since)
    flags = await repository.flags_of_many(session, customer_ids, since)
    previous = await repository.get_profiles(session, customer_ids)
    rows = []
    for customer_id in customer_ids:
        figures = compute_figures(
            orders[customer_id], flags[customer_id], now, settings.base_currency
        )
        before = previous.get(customer_id)
        if before is not None and before.last_order_at is not None:
            last = clock.as_utc(before.last_order_at)
            if figures["last_order_at"] is None or last > figures["last_order_at"]:
                figures["last_order_at"] = last  # older orders are not loaded; keep what we knew
        rows.append({"customer_id": customer_id, **figures, "computed_at": now})
    await repository.save_profiles(session, rows)


async def age_profiles(session: AsyncSession, now: datetime, limit: int) -> int:
    """Recompute the profiles an order, a return or a flag has aged out of; returns how many."""
    due = await repository.profiles_due_for_ageing(session, now, limit)
    for customer_id in due:
        await recompute_profile(session, customer_id)
    return len(due)


# --- reads and tags ------------------------------------------------------------------------------


@dataclass(slots=True)
class CustomerView:
    """A customer with everything its JSON shows."""

    customer: Customer
    requested_id: int
    identities: list[CustomerIdentity]
    profile: dict[str, Any] | None
    tags: list[str]
    flags: list[CustomerFlag]
    orders: list[CustomerOrder]


async def view(
    session: AsyncSession,
    customer_id: int,
    order_limit: int = 50,
    channels: tuple[str, ...] | None = None,
) -> CustomerView:
    """A customer (followed through merges) with profile, identities, tags, flags and orders.

    For a caller scoped to channel accounts (`channels`): CustomerOutOfScope unless the buyer
    has an order from one of them; then their orders from those accounts, the flags those
    orders raised, the phone and the identities on those accounts' platforms, and no profile
    (its figures add up every account's orders, which the caller may not see)."""
    customer = await resolve(session, customer_id)
    if channels is not None:
        return await _scoped_view(session, customer, customer_id, order_limit, channels)
    profile = await repository.get_profile(session, customer.id)
    return CustomerView(
        customer=customer,
        requested_id=customer_id,
        identities=await repository.identities_of(session, customer.id),
        profile=(
            {c: getattr(profile, c) for c in profile.__table__.columns.keys()}  # noqa: SIM118
            if profile is not None
            else None
        ),
        tags=await repository.tags_of(session, customer.id),
        flags=await repository.flags_of(session, customer.id),
        orders=await _with_live_status(
            session, await repository.recent_orders(session, customer.id, order_limit)
        ),
    )


async def _scoped_view(
    session: AsyncSession,
    customer: Customer,
    requested_id: int,
    order_limit: int,
    channels: tuple[str, ...],
) -> CustomerView:
    in_scope = (await repository.order_nos_in(session, [customer.id], channels)).get(customer.id)
    if not in_scope:
        raise CustomerOutOfScope(f"customer {requested_id} has no order from your channel accounts")
    accounts = await channels_service.list_accounts(session)
    platforms = {a.platform for a in accounts if a.code in channels}
    return CustomerView(
        customer=customer,
        requested_id=requested_id,
        identities=[
            i
            for i in await repository.identities_of(session, customer.id)
            if not i.platform or i.platform in platforms
        ],
        profile=None,
        tags=await repository.tags_of(session, customer.id),
        flags=[
            f
            for f in await repository.flags_of(session, customer.id)
            if f.detail.get("order_no") in in_scope
        ],
        orders=await _with_live_status(
            session, await repository.recent_orders(session, customer.id, order_limit, channels)
        ),
    )


async def check_in_scope(
    session: AsyncSession, customer_id: int, channels: tuple[str, ...] | None
) -> None:
    """Refuse a channel-scoped caller a customer with no order from its accounts."""
    if channels is None:
        return
    customer = await resolve(session, customer_id)
    if not (await repository.order_nos_in(session, [customer.id], channels)).get(customer.id):
        raise CustomerOutOfScope(f"customer {customer_id} has no order from your channel accounts")


async def _with_live_status(
    session: AsyncSession, orders: list[CustomerOrder]
) -> list[CustomerOrder]:
    """The orders with their current status: the consumer refreshes a customer's rows only on
    the status changes its figures depend on (see consumers.STATUS_EVENTS)."""
    if not orders:
        return orders
    live = await orders_queries.statuses_of(session, [o.order_id for o in orders])
    for order in orders:
        order.status = live.get(order.order_id, order.status)
        session.expunge(order)  # shown, not saved
    return orders


async def lookup(
    session: AsyncSession,
    *,
    phone: str | None,
    tag: str | None,
    limit: int = 100,
    channels: tuple[str, ...] | None = None,
) -> list[Customer]:
    """Customers found by a phone (its blind index) or carrying a tag; for a caller scoped to
    channel accounts, only buyers with an order from one of them."""
    if (phone is None) == (tag is None):
        raise LookupRequired("give exactly one of phone or tag", field="phone")
    if phone is not None:
        bidx = get_cipher().blind_index(phones.normalise(phone), "phone")
        one = await repository.by_identity_value(session, PHONE, bidx)
        found = [one] if one is not None else []
    else:
        assert tag is not None
        found = await repository.customers_with_tag(session, tag, limit)
    if channels is None or not found:
        return found
    seen = await repository.order_nos_in(session, [c.id for c in found], channels)
    return [c for c in found if c.id in seen]


async def add_tag(
    session: AsyncSession, customer_id: int, tag: str, by: str
) -> tuple[list[str], bool]:
    """Tag a customer; returns their tags and whether this one was new."""
    customer = await resolve(session, customer_id)
    created = await repository.add_tag(session, customer.id, tag, by, clock.now())
    return await repository.tags_of(session, customer.id), created


async def remove_tag(session: AsyncSession, customer_id: int, tag: str) -> None:
    """Remove a tag from a customer, or TagNotFound."""
    customer = await resolve(session, customer_id)
    if not await repository.remove_tag(session, customer.id, tag):
        raise TagNotFound(f"customer {customer.id} has no tag {tag!r}", tag=tag)


# --- facts for rules -----------------------------------------------------------------------------


async def rule_facts(
    session: AsyncSession, order_id: int, burst_window: timedelta | None = None
) -> dict[str, Any]:
    """What the rules know of an order's buyer: the profile's figures, tags, risk flags and the
    most orders of one of this order's SKUs they placed within `burst_window` before it (the
    `customers_burst_window_seconds` setting, 5 minutes by default)."""
    return (await rule_facts_many(session, [order_id], burst_window))[order_id]


def _unknown_buyer() -> dict[str, Any]:
    return {
        "known": False,
        "id": 0,
        "orders_90d": 0,
        "spend_90d_minor": 0,
        "aov_90d_minor": 0,
        "returns_30d": 0,
        "risk_flags": [],
        "tags": [],
        "max_same_sku_orders_5m": 0,
    }


async def rule_facts_many(
    session: AsyncSession, order_ids: list[int], burst_window: timedelta | None = None
) -> dict[int, dict[str, Any]]:
    """`rule_facts` of many orders, one query per table: their links, the linked buyers (a
    merged one followed to its survivor), profiles, tags and the orders in each burst window."""
    if burst_window is None:
        burst_window = timedelta(seconds=get_settings().customers_burst_window_seconds)
    out = {order_id: _unknown_buyer() for order_id in order_ids}
    links = await repository.customer_orders_of(session, order_ids)
    live = await repository.get_customers(session, sorted({li.customer_id for li in links}))
    owner: dict[int, int] = {}
    for linked in links:
        customer = live.get(linked.customer_id)
        if customer is None or customer.merged_into_id is not None:
            customer = await resolve(session, linked.customer_id)
        owner[linked.order_id] = customer.id
    ids = sorted(set(owner.values()))
    profiles = await repository.get_profiles(session, ids)
    tags = await repository.tags_of_many(session, ids)
    ranges: dict[int, tuple[datetime, datetime]] = {}
    for linked in links:
        placed_at = clock.as_utc(linked.placed_at)
        start, end = ranges.get(owner[linked.order_id], (placed_at - burst_window, placed_at))
        ranges[owner[linked.order_id]] = (
            min(start, placed_at - burst_window),
            max(end, placed_at),
        )
    placed = await repository.orders_placed_in(session, ranges)
    for linked in links:
        customer_id = owner[linked.order_id]
        placed_at = clock.as_utc(linked.placed_at)
        recent = [
            o
            for o in placed[customer_id]
            if placed_at - burst_window < clock.as_utc(o.placed_at) <= placed_at
        ]
        facts = out[linked.order_id]
        facts.update(
            known=True,
            id=customer_id,
            tags=list(tags[customer_id]),
            max_same_sku_orders_5m=max(
                (sum(1 for o in recent if sku in o.skus) for sku in linked.skus), default=0
            ),
        )
        profile = profiles.get(customer_id)
        if profile is not None:
            facts.update(
                orders_90d=profile.orders_90d,
                spend_90d_minor=profile.spend_90d_minor,
                aov_90d_minor=profile.aov_90d_minor,
                returns_30d=profile.returns_30d,
                risk_flags=list(profile.risk_flags),
            )
    return out
