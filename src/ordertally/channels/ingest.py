"""The one entry point of every ingestion path (webhook, pull, file): canonical orders in,
orders out, exactly once per (account, external order id).

Orders are written in chunks, one transaction per chunk: the chunk's known orders are read in
one query (the link table, then the orders by (channel, external id) for orders another path
created without a link). Channels only map: each new platform order becomes an
`orders.creation.OrderSpec` (initial status from the platform's, personal data encrypted and
masked under the masked-phone rule below, unmapped SKUs as a hold), and the orders' one creation
path (`creation.create_many`) writes the chunk's orders with multi-row statements and reserves
their stock; channels then add their links, events and the platform's changes. A concurrent
delivery of the same order (another process, another path) makes the chunk's INSERT fail on a
unique constraint; the chunk is then rolled back and read again, where the order is known.

Phones: platforms such as Pinduoduo and Douyin give masked phones ("138****1234") and Amazon
often none. Such a phone is kept as given (encrypted, shown as given); its blind index is
computed over (platform, buyer id or order id, masked form) under its own purpose, so it never
equals a real phone's index and never merges strangers; customers match those buyers by
`buyer_platform_id`. A real phone is normalised to E.164 as every order's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from prometheus_client import Counter
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.channels import held, repository
from ordertally.channels.canonical import CanonicalOrder, PlatformStatus
from ordertally.channels.errors import AccountNotFound
from ordertally.channels.events import ChannelOrderIngested
from ordertally.core import clock, money, phones
from ordertally.core.crypto import PiiCipher, get_cipher
from ordertally.core.db import Database
from ordertally.core.errors import OrdertallyError
from ordertally.core.inputs import MAX_AMOUNT
from ordertally.core.settings import Settings, get_settings
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.inventory import service as inventory_service
from ordertally.orders import creation, fx, transitions
from ordertally.orders import service as orders_service
from ordertally.orders.contact import PII_ADDRESS, PII_NAME, PII_PHONE, mask_name
from ordertally.orders.errors import ActorNotAllowed
from ordertally.orders.state_machine import Actor, ActorKind, Event, Status

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
AMOUNT_MISMATCHES = Counter(
    "ordertally_channel_amount_mismatches_total",
    "Platform orders whose total differs from our sum of their parts (amount_mismatch cases)",
    ["platform"],
)

_UNSHIPPED = frozenset({Status.PENDING_PAYMENT, Status.PAID, Status.ALLOCATED, Status.FULFILLING})
MAX_CHUNK_ATTEMPTS = 5


@dataclass
class IngestResult:
    created: int = 0
    updated: int = 0
    duplicates: int = 0
    held: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)  # (external_id, message)
    # The orders behind `errors` with their messages (pulls and imports hold them, issue 15).
    failed: list[tuple[CanonicalOrder, str]] = field(
        default_factory=list, compare=False, repr=False
    )
    # external id -> order number of every order stored or recognised (not part of equality).
    order_nos: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def add(self, other: IngestResult) -> None:
        self.created += other.created
        self.updated += other.updated
        self.duplicates += other.duplicates
        self.held += other.held
        self.errors.extend(other.errors)
        self.failed.extend(other.failed)
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
                    # Plan the known-id lookups for these values, not once for a table that
                    # was empty when a bulk load began (a generic plan cached then stays a
                    # sequential scan: 100k orders took 454 s instead of ~45 s).
                    await repository.plan_each_query(session)
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
    row = await repository.account_ref(session, code)
    if row is None:
        raise AccountNotFound(f"channel account {code!r} does not exist", account=code)
    return AccountRef(int(row.id), str(row.code), str(row.platform))


async def load_sku_mappings(session: AsyncSession, account: AccountRef) -> dict[str, str]:
    """platform SKU -> our SKU for this account (account mappings win over platform-wide)."""
    rows = await repository.mapping_rows(session, account.platform, account.code)
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
    *,
    hold: bool = True,
) -> IngestResult:
    """Ingest up to one chunk inside the caller's transaction. Orders of a pull or an import
    that cannot be created are kept with an `order_not_created` case, replayable (`held`);
    `hold=False` when the caller keeps them itself (webhooks, replays)."""
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
    if changed and (new or len(changed) > 1):
        # Creating orders and changing known ones (a cancel releases, a payment may reserve
        # again) are several stock lock sets in one transaction: take the known orders, then
        # every stock row the chunk can touch, in id order, first (issue 21).
        await orders_service.lock_orders_and_stock(
            session,
            [hit.order_id for _, hit in changed],
            extra_skus={
                mappings.get(line.platform_sku) or line.platform_sku[:64]
                for order in new
                for line in order.lines
            },
        )
    if new:
        await _create_many(session, account, new, via, mappings, settings, cipher, result)
    for order, hit in changed:
        await _apply_change(session, account, order, hit, via, cipher)
        result.updated += 1
    if hold and via != "webhook" and result.failed:
        await held.hold_failed(session, account, via, result.failed)
    return result


async def _known(
    session: AsyncSession, account: AccountRef, external_ids: list[str]
) -> dict[str, _Known]:
    if not external_ids:
        return {}
    known: dict[str, _Known] = {}
    for row in await repository.links_by_external(session, account.id, external_ids):
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
        found = await orders_service.by_external_ids(session, account.code, missing)
        for external_id, (order_id, order_no) in found.items():
            known[external_id] = _Known(order_id, order_no, None, "", "")
    return known


# --- new orders: canonical -> spec, then the orders' one creation path -------------------------


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


def _max_minor(currency: str) -> int:
    """MAX_AMOUNT in a currency's minor units (an order above it could overflow a column)."""
    return int(MAX_AMOUNT.scaleb(money.exponent(currency)))


def _creation_of(status: PlatformStatus) -> Event:
    if status in (PlatformStatus.UNPAID, PlatformStatus.CANCELLED):
        return Event.CREATE
    return Event.IMPORT_PAID


def _spec(
    account: AccountRef,
    order: CanonicalOrder,
    mappings: dict[str, str],
    known_skus: set[str],
    actor: Actor,
    settings: Settings,
    cipher: PiiCipher,
    rates: dict[str, Decimal] | None = None,
) -> creation.OrderSpec:
    """Map a platform order onto an order spec; raises _Invalid for what cannot be stored."""
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
        creation.fx_rate(settings, currency, rates)
    except OrdertallyError as exc:
        raise _Invalid(exc.detail) from exc
    lines: list[creation.LineSpec] = []
    unmapped: list[str] = []
    for line in order.lines:
        if line.quantity <= 0 or line.quantity > 100_000:
            raise _Invalid(f"line {line.platform_sku!r}: quantity must be 1..100000")
        if line.unit_price_minor < 0 or line.discount_minor < 0:
            raise _Invalid(f"line {line.platform_sku!r}: negative price or discount")
        if line.discount_minor > line.unit_price_minor * line.quantity:
            raise _Invalid(f"line {line.platform_sku!r}: discount exceeds the line amount")
        sku = mappings.get(line.platform_sku)
        if sku is None:
            sku = line.platform_sku[:64] or "UNMAPPED"
            if sku not in known_skus:
                unmapped.append(line.platform_sku)
        lines.append(
            creation.LineSpec(sku, line.quantity, line.unit_price_minor, line.discount_minor)
        )
    if sum(ln.unit_price_minor * ln.quantity for ln in lines) > _max_minor(currency):
        raise _Invalid(f"the order adds up to more than {MAX_AMOUNT} {currency}")
    if order.discount_minor < 0:
        raise _Invalid("negative order discount")
    if order.discount_minor > sum(
        ln.unit_price_minor * ln.quantity - ln.discount_minor for ln in lines
    ):
        raise _Invalid("discount exceeds the order's subtotal")
    if min(order.shipping_minor, order.tax_minor, order.fee_minor) < 0:
        raise _Invalid("negative shipping, tax or fee")

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
    buyer_name = order.buyer_name or address.name or "-"
    # What the platform's decrypt service answered goes into the encrypted columns only; the
    # masked columns keep the platform's own masks (Pinduoduo *_mask) for display and search.
    plain = order.decrypted
    real_name = plain.get("receiver_name", "")
    real_line1 = plain.get("receiver_address") or plain.get("address") or ""
    if plain.get("receiver_phone"):
        given_mask = phone_masked if "*" in phone_masked else ""
        phone, phone_bidx, real_mask, last4 = phone_fields(
            cipher, plain["receiver_phone"], platform=account.platform, buyer_key=buyer_key
        )
        ship_phone = phone
        phone_masked = ship_masked = given_mask or real_mask
    address_doc = orjson.dumps(
        {
            "name": real_name or address.name,
            "phone": ship_phone,
            "province": address.province,
            "city": address.city,
            "district": address.district,
            "line1": real_line1 or address.line1,
            "postal_code": address.postal_code,
            # The platform's ciphertext, for its decrypt API (Pinduoduo, Douyin).
            **{f"platform_ciphertext_{k}": v for k, v in sorted(order.encrypted.items())},
            **({"platform_decrypted": sorted(plain)} if plain else {}),
        }
    ).decode()
    personal = creation.Personal(
        customer_name_enc=cipher.encrypt(real_name or buyer_name, PII_NAME),
        customer_name_masked=mask_name(buyer_name)[:64],
        customer_phone_enc=cipher.encrypt(phone, PII_PHONE),
        customer_phone_bidx=phone_bidx,
        customer_phone_masked=phone_masked,
        customer_phone_last4=last4,
        shipping_address_enc=cipher.encrypt(address_doc, PII_ADDRESS),
        ship_name_masked=mask_name(address.name or buyer_name)[:64],
        ship_phone_masked=ship_masked,
        ship_province=address.province[:32],
        ship_city=address.city[:64],
        ship_district=address.district[:64],
    )
    holds: tuple[creation.HoldSpec, ...] = ()
    if unmapped:
        holds += (
            creation.HoldSpec(
                "channel",
                "sku_unmapped",
                {"account": account.code, "platform_skus": sorted(set(unmapped))},
            ),
        )
    if order.decrypt_error:
        # Not shippable until someone has the recipient: the order is kept, and held.
        holds += (
            creation.HoldSpec(
                "channel",
                "address_not_decrypted",
                {
                    "account": account.code,
                    "external_id": order.external_id,
                    "fields": sorted(order.encrypted),
                    "error": order.decrypt_error,
                },
            ),
        )
    return creation.OrderSpec(
        channel=account.code,
        external_id=order.external_id,
        currency=currency,
        lines=tuple(lines),
        discount_minor=order.discount_minor,
        personal=personal,
        actor=actor,
        initial=_creation_of(order.status),
        # The platform runs the buyer's payment and tells us when it is paid or cancelled; our
        # own timeout only backstops a lost update, after the platform's own unpaid window.
        payment_window_seconds=settings.channels_unpaid_deadline_seconds,
        hold_on_shortage=True,  # the platform took the order: no platform order is dropped
        holds=holds,
        shipping_minor=order.shipping_minor,
        tax_minor=order.tax_minor,
        fee_minor=order.fee_minor,
        known_skus_only=False,  # unknown codes are held as sku_unmapped, never refused
    )


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
    candidates = {
        line.platform_sku[:64] or "UNMAPPED"
        for order in orders
        for line in order.lines
        if line.platform_sku not in mappings
    }
    known_skus = await inventory_service.known_skus(session, candidates)
    rates = await fx.rates_at(session, settings, clock.now())
    actor = Actor(ActorKind.CHANNEL_SYNC, f"channel:{account.code}", note=f"via {via}")
    mapped: list[tuple[CanonicalOrder, creation.OrderSpec | str]] = []
    for order in orders:
        try:
            mapped.append(
                (
                    order,
                    _spec(account, order, mappings, known_skus, actor, settings, cipher, rates),
                )
            )
        except _Invalid as exc:
            mapped.append((order, str(exc)))
    specs = [m for _, m in mapped if not isinstance(m, str)]
    outcomes = iter(
        (await creation.create_many(session, specs, defer_unusual=False)).outcomes if specs else []
    )
    events: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    cancels: list[tuple[str, CanonicalOrder]] = []
    made = 0
    for source, spec in mapped:
        if isinstance(spec, str):
            result.errors.append((source.external_id, spec))
            result.failed.append((source, spec))
            continue
        outcome = next(outcomes)
        if isinstance(outcome, OrdertallyError):
            result.errors.append((source.external_id, outcome.detail))
            result.failed.append((source, outcome.detail))
            continue
        assert outcome is not None, "ingest mode writes every valid order"
        order_id, order_no = outcome.order_id, outcome.values["order_no"]
        held = bool(outcome.holds)
        if source.status in (PlatformStatus.SHIPPED, PlatformStatus.DELIVERED):
            # We never saw it unshipped: whoever shipped it, we must not ship it again.
            await _case(session, order_id, account, source, "shipped_on_platform", True)
            held = True
        elif source.status is PlatformStatus.REFUNDED:
            await _case(session, order_id, account, source, "platform_refunded", True)
            held = True
        elif source.status is PlatformStatus.CANCELLED:
            cancels.append((order_no, source))
        await _check_amount(session, account, source, order_id, outcome.values)
        result.held += int(held)
        events.append(_event_row(account, source, order_id, order_no, created=True))
        created_at = outcome.values["created_at"]
        links.append(
            {
                "account_id": account.id,
                "external_id": source.external_id,
                "order_id": order_id,
                "order_no": order_no,
                "platform_updated_at": source.updated_at,
                "raw_status": source.status.value,
                "address_hash": _address_hash(cipher, source),
                "first_via": via,
                "last_via": via,
                "created_at": created_at,
                "updated_at": created_at,
            }
        )
        result.order_nos[source.external_id] = order_no
        made += 1
    if not made:
        return
    await repository.add_links(session, links)
    await outbox.publish_rows(session, events)
    creation.count_created(account.code, made)
    result.created += made
    for order_no, source in cancels:
        await _cancel(session, account, order_no, source)


async def _check_amount(
    session: AsyncSession,
    account: AccountRef,
    order: CanonicalOrder,
    order_id: int,
    values: dict[str, Any],
) -> None:
    """Open an `amount_mismatch` case when our total is not the platform's (never adjusted)."""
    if order.platform_total_minor is None or order.platform_total_minor == values["total_minor"]:
        return
    AMOUNT_MISMATCHES.labels(account.platform).inc()
    currency = values["currency"]
    await _case(
        session,
        order_id,
        account,
        order,
        "amount_mismatch",
        False,
        currency=currency,
        platform_total=money.format_minor(order.platform_total_minor, currency),
        our_total=money.format_minor(values["total_minor"], currency),
        parts={
            key: money.format_minor(values[f"{key}_minor"], currency)
            for key in ("subtotal", "discount", "shipping", "tax", "fee")
        },
    )


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
    await transitions.transition(session, order_no, Event.CANCEL, actor)


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
        await repository.add_links(
            session,
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
        await repository.update_link(session, account.id, order.external_id, values)
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
        await transitions.transition(session, hit.order_no, Event.PAYMENT_SUCCEEDED, actor)
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
