"""Applying what carriers say: tracking events stored once each, the shipment moved to the
status of its newest event (the shipment table in state_machine.py), delivery and exceptions
acted on, and shipped parcels that never got a scan flagged."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.settings import get_settings
from ordertally.events import outbox
from ordertally.exceptions import service as exceptions_service
from ordertally.fulfillment import metrics, repository, state_machine
from ordertally.fulfillment import tracking_page as tracking
from ordertally.fulfillment.carriers import registry
from ordertally.fulfillment.carriers.base import TrackingUpdate
from ordertally.fulfillment.events import ShipmentDelivered, ShipmentTrackingException
from ordertally.fulfillment.models import Shipment
from ordertally.fulfillment.shipments import shipments_of
from ordertally.fulfillment.state_machine import ON_THE_ROAD, ShipmentStatus
from ordertally.orders import queries as orders_queries
from ordertally.orders import service as orders_service
from ordertally.orders.service import Actor
from ordertally.orders.state_machine import ActorKind, Event, Status

if TYPE_CHECKING:
    from ordertally.orders.models import SalesOrder

CARRIER = Actor(ActorKind.CARRIER, "carrier")

# Kuaidi100 state codes behind an exception, named the way ShipmentTrackingException names them.
_EXCEPTION_REASONS = {
    "2": "problem",
    "4": "rejected",
    "6": "returned",
    "13": "customs",
    "14": "rejected",
}


@dataclass(frozen=True, slots=True)
class TrackingOutcome:
    known: bool  # a shipment has this waybill
    stored: int  # events new to us
    status: str | None  # the shipment's status afterwards


async def apply_tracking(
    session: AsyncSession, update_: TrackingUpdate, *, source: str, now: datetime | None = None
) -> TrackingOutcome:
    """Store what a push or a query says (each event once) and move the shipment to the status
    of its newest event by event time, so a late or repeated push never moves it backwards."""
    return (await apply_tracking_many(session, [update_], source=source, now=now))[0]


async def apply_tracking_many(
    session: AsyncSession,
    updates: Sequence[TrackingUpdate],
    *,
    source: str,
    now: datetime | None = None,
) -> list[TrackingOutcome]:
    """`apply_tracking` for several updates in one transaction (the push route's group commit,
    the poll's answers), in a fixed number of statements per round: the shipments looked up by
    waybill, their orders locked once in id order, the scans inserted, the newest scans read
    and the shipments updated together. An order named by several updates (a parcel pushed
    twice, two parcels of one order) takes them in rounds, in order, so a batch does exactly
    what its updates would do one after the other. A change that acts beyond the shipment
    (delivered, returned, a carrier exception) is acted on set-based too (`_act_beyond`)."""
    now = now or clock.now()
    outcomes: list[TrackingOutcome] = [TrackingOutcome(False, 0, None)] * len(updates)
    if not updates:
        return outcomes
    found: dict[str, list[repository.WaybillMatch]] = defaultdict(list)
    for match in await repository.with_waybills(session, {u.waybill_no for u in updates}):
        found[match.waybill_no].append(match)
    rounds: list[list[tuple[int, TrackingUpdate, repository.WaybillMatch]]] = []
    taken: Counter[int] = Counter()
    for i, update_ in enumerate(updates):
        matches = found.get(update_.waybill_no)
        if not matches:
            continue
        chosen = next((m for m in matches if m.company == update_.company), matches[0])
        # Rounds by order, not by parcel: an order's events (its parcels' deliveries and
        # exceptions, its own delivery) keep the order one by one writes them in.
        if taken[chosen.order_id] == len(rounds):
            rounds.append([])
        rounds[taken[chosen.order_id]].append((i, update_, chosen))
        taken[chosen.order_id] += 1
    # One order, one writer: every order concerned is held until COMMIT, locked in id order.
    await orders_queries.hold(session, [chosen.order_id for r in rounds for *_, chosen in r])
    for round_ in rounds:
        await _apply_round(session, round_, source, now, outcomes)
    return outcomes


async def _apply_round(
    session: AsyncSession,
    round_: list[tuple[int, TrackingUpdate, repository.WaybillMatch]],
    source: str,
    now: datetime,
    outcomes: list[TrackingOutcome],
) -> None:
    """Updates of distinct orders (locked): scans, newest scans, shipments, what acts beyond."""
    heads = await repository.tracking_heads(session, [c.id for _, _, c in round_])
    round_ = [item for item in round_ if item[2].id in heads]
    rows = [
        {
            "shipment_id": chosen.id,
            "company": chosen.company,
            "waybill_no": update_.waybill_no,
            "occurred_at": event.occurred_at,
            "status": event.status.value,
            "state_code": event.state_code,
            "description": event.description[:2000],
            "location": event.location[:200],
            "source": source,
            "received_at": now,
        }
        for _, update_, chosen in round_
        for event in update_.events
    ]
    stored = Counter(await repository.insert_tracking_events(session, rows))
    for _, update_, chosen in round_:
        if update_.events:
            newest = max(event.occurred_at for event in update_.events)
            metrics.TRACKING_LAG.observe(max((now - newest).total_seconds(), 0.0))
            metrics.TRACKING_EVENTS.labels(source).inc(stored[chosen.id])
    newest_of = await repository.newest_events(
        session, [c.id for _, _, c in round_ if heads[c.id].status in ON_THE_ROAD]
    )
    plain: list[dict[str, Any]] = []
    beyond: list[tuple[int, repository.WaybillMatch, dict[str, Any], Any]] = []
    for i, update_, chosen in round_:
        head = heads[chosen.id]
        values: dict[str, Any] = {"id": chosen.id, "last_news_at": now}
        if update_.finished:
            values["next_poll_at"] = None
        elif head.subscribed_at is not None:
            values["next_poll_at"] = now + timedelta(seconds=poll_every(head.carrier))
        status = head.status
        newest_ = newest_of.get(chosen.id)
        spec = state_machine.by_carrier_event(newest_.status) if newest_ is not None else None
        if newest_ is not None and spec is not None and head.status in spec.sources:
            if spec.event_type and spec.target.value != head.status:
                beyond.append((i, chosen, values, newest_))
                continue
            status = spec.target.value
            values |= {
                "status": status,
                "tracking_state_code": newest_.state_code,
                "last_event_at": newest_.occurred_at,
                "updated_at": now,
            }
        plain.append(values)
        outcomes[i] = TrackingOutcome(True, stored[chosen.id], status)
    await repository.update_each(session, plain)
    if beyond:
        await _act_beyond(session, beyond, heads, now)
        for i, chosen, values, _ in beyond:
            outcomes[i] = TrackingOutcome(True, stored[chosen.id], values["status"])


async def _act_beyond(
    session: AsyncSession,
    beyond: list[tuple[int, repository.WaybillMatch, dict[str, Any], Any]],
    heads: dict[int, Any],
    now: datetime,
) -> None:
    """The changes of a round that act beyond their shipment, as `refresh_tracking_status` acts
    on each, one after the other, but set-based: the shipments updated together, a
    ShipmentDelivered or a case and a ShipmentTrackingException per parcel in the round's
    order, then every order whose parcels have all arrived delivered at once through the
    transition table. The orders are locked (`apply_tracking_many`)."""
    events: list[dict[str, Any]] = []
    delivered: set[int] = set()
    for _, chosen, values, newest in beyond:
        spec = state_machine.by_carrier_event(newest.status)
        assert spec is not None
        head = heads[chosen.id]
        values |= {
            "status": spec.target.value,
            "tracking_state_code": newest.state_code,
            "last_event_at": newest.occurred_at,
            "updated_at": now,
        }
        parcel = _Parcel(chosen.id, chosen.company, chosen.waybill_no or "")
        order = _Order(chosen.order_id, head.order_no)
        if spec is state_machine.DELIVER:
            values |= {"delivered_at": newest.occurred_at, "next_poll_at": None}
            if head.shipped_at is not None:
                metrics.DELIVERY_TIME.observe(
                    max((newest.occurred_at - clock.as_utc(head.shipped_at)).total_seconds(), 0)
                )
            events.append(_delivered_event(parcel, order, newest.occurred_at))
            delivered.add(chosen.order_id)
        else:
            reason = (
                "returned"
                if spec.target == ShipmentStatus.RETURNED
                else _EXCEPTION_REASONS.get(newest.state_code, "carrier_exception")
            )
            events.append(
                await _tracking_exception(session, parcel, order, reason, newest.state_code, now)
            )
    await repository.update_each(session, [values for _, _, values, _ in beyond])
    await outbox.publish_rows(session, events)
    siblings = await repository.statuses_of_orders(session, delivered)
    arrived = {
        order_id: CARRIER
        for order_id, statuses in siblings.items()
        if all(status == ShipmentStatus.DELIVERED for status in statuses)
    }
    if arrived:
        # Only those still `shipped` move, as `refresh_tracking_status` checks one by one.
        await orders_service.transition_many(session, sorted(arrived), Event.DELIVER, arrived)


@dataclass(frozen=True, slots=True)
class _Parcel:
    id: int
    company: str
    waybill_no: str


@dataclass(frozen=True, slots=True)
class _Order:
    id: int
    order_no: str


def _delivered_event(parcel: _Parcel, order: _Order, delivered_at: datetime) -> dict[str, Any]:
    return outbox.build_row(
        state_machine.DELIVER.event_type,
        ShipmentDelivered(
            shipment_id=parcel.id,
            order_id=order.id,
            order_no=order.order_no,
            carrier=parcel.company,
            waybill_no=parcel.waybill_no,
            tracking_url=tracking.url_for(order.order_no),
            delivered_at=delivered_at,
        ),
        aggregate_type="order",
        aggregate_id=order.order_no,
    )


def poll_every(carrier: str) -> int:
    """Seconds between two queries of one parcel (never under the carrier's own floor)."""
    settings = get_settings()
    adapter = registry.current(settings)
    floor = registry.min_query_interval(adapter) if adapter and adapter.code == carrier else 0
    return max(settings.fulfillment_poll_interval_seconds, floor)


async def refresh_tracking_status(
    session: AsyncSession, shipment: Shipment, order: SalesOrder, now: datetime
) -> None:
    """Set a shipment on the road to the status of its newest stored event (a carrier-event
    transition of state_machine.py) and act on the change. The caller holds the order's lock."""
    if shipment.status not in ON_THE_ROAD:
        await session.flush()
        return
    newest = await repository.newest_event(session, shipment.id)
    spec = state_machine.by_carrier_event(newest.status) if newest is not None else None
    if newest is None or spec is None or shipment.status not in spec.sources:
        await session.flush()
        return
    before = shipment.status
    shipment.status = spec.target.value
    shipment.tracking_state_code = newest.state_code
    shipment.last_event_at = newest.occurred_at
    shipment.updated_at = now
    await session.flush()
    if shipment.status == before:
        return
    if spec is state_machine.DELIVER:
        shipment.delivered_at = newest.occurred_at
        shipment.next_poll_at = None
        if shipment.shipped_at is not None:
            metrics.DELIVERY_TIME.observe(
                max((newest.occurred_at - clock.as_utc(shipment.shipped_at)).total_seconds(), 0)
            )
        parcel = _Parcel(shipment.id, shipment.company, shipment.waybill_no or "")
        await outbox.publish_rows(
            session,
            [_delivered_event(parcel, _Order(order.id, order.order_no), newest.occurred_at)],
        )
        siblings = await shipments_of(session, order.id)
        if order.status == Status.SHIPPED.value and all(
            s.status == ShipmentStatus.DELIVERED for s in siblings
        ):
            await orders_service.transition(session, order.order_no, Event.DELIVER, CARRIER)
    elif spec.event_type == "ShipmentTrackingException":
        reason = (
            "returned"
            if shipment.status == ShipmentStatus.RETURNED
            else _EXCEPTION_REASONS.get(newest.state_code, "carrier_exception")
        )
        await _raise_tracking_exception(session, shipment, order, reason, newest.state_code, now)
    await session.flush()


async def _raise_tracking_exception(
    session: AsyncSession,
    shipment: Shipment,
    order: SalesOrder,
    reason: str,
    detail: str,
    now: datetime,
) -> None:
    parcel = _Parcel(shipment.id, shipment.company, shipment.waybill_no or "")
    row = await _tracking_exception(
        session, parcel, _Order(order.id, order.order_no), reason, detail, now
    )
    await outbox.publish_rows(session, [row])


async def _tracking_exception(
    session: AsyncSession, parcel: _Parcel, order: _Order, reason: str, detail: str, now: datetime
) -> dict[str, Any]:
    """Open the parcel's case; returns its ShipmentTrackingException outbox row to publish."""
    await exceptions_service.open_case(
        session,
        order_id=order.id,
        category="fulfillment",
        type="tracking_stale" if reason == "tracking_stale" else "tracking_exception",
        blocking=False,
        detail={
            "shipment_id": parcel.id,
            "carrier": parcel.company,
            "waybill_no": parcel.waybill_no,
            "reason": reason,
            "detail": detail,
        },
    )
    return outbox.build_row(
        "ShipmentTrackingException",
        ShipmentTrackingException(
            shipment_id=parcel.id,
            order_id=order.id,
            order_no=order.order_no,
            carrier=parcel.company,
            waybill_no=parcel.waybill_no,
            tracking_url=tracking.url_for(order.order_no),
            reason=reason,
            detail=detail,
            occurred_at=now,
        ),
        aggregate_type="order",
        aggregate_id=order.order_no,
    )


async def flag_stale(session: AsyncSession, now: datetime, limit: int = 500) -> int:
    """Shipped parcels without a single scan after the threshold become `tracking_stale`
    exceptions, once each."""
    cutoff = now - timedelta(seconds=get_settings().fulfillment_stale_after_seconds)
    stale = await repository.stale_candidates(session, cutoff, limit)
    for shipment in stale:
        order = await orders_queries.get_by_id(session, shipment.order_id)
        assert order is not None
        shipment.stale_flagged_at = now
        hours = get_settings().fulfillment_stale_after_seconds / 3600
        await _raise_tracking_exception(
            session,
            shipment,
            order,
            "tracking_stale",
            f"no tracking {hours:g} h after shipping",
            now,
        )
    metrics.STALE_SHIPMENTS.set(await repository.count_stale_flagged(session))
    await session.flush()
    return len(stale)
