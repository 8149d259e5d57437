"""Inventory use cases: stock movements, reservation at order creation (all or nothing),
commit on payment, release on close, consumption on shipment, the expiry sweep, and routing.

Stock is only ever reserved by a conditional UPDATE (`available >= qty`), in ascending
(warehouse, SKU) order, so concurrent orders can neither oversell nor deadlock.

A bundle (组合装) has no stock of its own: every entry point expands demand for a bundle into
its components (catalog's bill of materials) before planning, so a bundle line's reservations,
shipments and releases are rows of its components, taken in the same order as any other.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import service as catalog_service
from ordertally.core import clock
from ordertally.core.db import Read, dialect_of
from ordertally.core.settings import get_settings
from ordertally.inventory import geo, repository, routing
from ordertally.inventory.errors import (
    BelowReserved,
    InsufficientStock,
    InvalidMovement,
    InvalidStrategy,
    WarehouseExists,
    WarehouseNotFound,
)
from ordertally.inventory.models import StockMovement, Warehouse

log = logging.getLogger(__name__)

RESERVATION_FAILURES = Counter(
    "ordertally_reservation_failures_total", "Reservations refused or retried", ["reason"]
)
# Each retry re-reads availability; a buyer is refused only when the stock is really gone.
RACE_RETRIES = 32


@dataclass(frozen=True, slots=True)
class LineDemand:
    line_id: int
    line_no: int
    sku: str
    quantity: int


class _Raced(Exception):
    """Availability changed between reading and reserving; plan again."""


# --- warehouses --------------------------------------------------------------------------------


async def create_warehouse(session: AsyncSession, values: dict[str, Any]) -> Warehouse:
    """Create a warehouse."""
    if await repository.warehouse_by_code(session, values["code"]) is not None:
        raise WarehouseExists(f"warehouse {values['code']} exists")
    now = clock.now()
    await repository.add_warehouse(session, {**values, "created_at": now, "updated_at": now})
    warehouse = await repository.warehouse_by_code(session, values["code"])
    assert warehouse is not None
    return warehouse


async def update_warehouse(session: AsyncSession, code: str, values: dict[str, Any]) -> Warehouse:
    """Change a warehouse."""
    warehouse = await get_warehouse(session, code)
    if values:
        await repository.update_warehouse(
            session, warehouse.id, {**values, "updated_at": clock.now()}
        )
    fresh = await repository.warehouse_by_code(session, code)
    assert fresh is not None
    return fresh


async def get_warehouse(session: AsyncSession, code: str) -> Warehouse:
    """A warehouse by code, or WarehouseNotFound."""
    warehouse = await repository.warehouse_by_code(session, code)
    if warehouse is None:
        raise WarehouseNotFound(f"warehouse {code} does not exist")
    return warehouse


async def list_warehouses(session: AsyncSession) -> list[Warehouse]:
    """Every warehouse."""
    return await repository.warehouses(session)


async def add_catalogue(
    session: AsyncSession, warehouses: list[dict[str, Any]], skus: list[dict[str, Any]]
) -> None:
    """Create warehouses and SKUs (demo and setup scripts)."""
    for values in warehouses:
        await create_warehouse(session, values)
    for values in skus:
        await catalog_service.create_sku(session, values, "setup")


async def has_warehouses(session: AsyncSession) -> bool:
    """Whether any warehouse is set up."""
    return await repository.count_warehouses(session) > 0


# --- stock movements ---------------------------------------------------------------------------


async def _ensure_rows(session: AsyncSession, warehouse_id: int, sku: str) -> list[Any]:
    rows = await repository.stock_rows(session, warehouse_id, sku)
    if rows:
        return rows
    buckets = get_settings().stock_buckets_default
    await repository.add_stock_rows(
        session,
        [
            {
                "warehouse_id": warehouse_id,
                "sku": sku,
                "bucket": b,
                "on_hand": 0,
                "reserved": 0,
                "safety_stock": 0,
            }
            for b in range(buckets)
        ],
    )
    return await repository.stock_rows(session, warehouse_id, sku)


def _spread(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def record_movement(
    session: AsyncSession,
    *,
    warehouse_code: str,
    sku: str,
    kind: str,
    quantity: int,
    reason: str,
    actor: str,
) -> dict[str, Any]:
    """Receipt or return (+units), adjustment (±units) or count (the counted total) with its
    ledger row. The code must be a catalogue SKU that is not a bundle (UnknownSku /
    InvalidBundle)."""
    warehouse = await get_warehouse(session, warehouse_code)
    await catalog_service.require_stockable(session, sku)
    rows = await _ensure_rows(session, warehouse.id, sku)
    on_hand = sum(r.on_hand for r in rows)
    if kind in ("receipt", "return"):  # a return: units a buyer sent back (after-sales)
        if quantity <= 0:
            raise InvalidMovement(f"a {kind} adds a positive quantity", field="quantity")
        delta = quantity
    elif kind == "adjustment":
        if quantity == 0:
            raise InvalidMovement("an adjustment changes the quantity", field="quantity")
        delta = quantity
    elif kind == "count":
        if quantity < 0:
            raise InvalidMovement("a count cannot be negative", field="quantity")
        delta = quantity - on_hand
    else:
        raise InvalidMovement(f"kind must be receipt, return, adjustment or count, not {kind!r}")
    if delta > 0:
        # Spread additions so every bucket of a hot SKU can serve reservations.
        for row, part in zip(rows, _spread(delta, len(rows)), strict=True):
            if part:
                await repository.add_on_hand(session, row.id, part)
    elif delta < 0:
        free = sum(r.on_hand - r.reserved for r in rows)
        if free < -delta:
            raise BelowReserved(
                f"{warehouse_code}/{sku}: {on_hand} on hand, {on_hand - free} reserved; "
                f"cannot remove {-delta}",
                sku=sku,
                warehouse=warehouse_code,
            )
        remaining = -delta
        for row in sorted(rows, key=lambda r: r.on_hand - r.reserved, reverse=True):
            take = min(row.on_hand - row.reserved, remaining)
            if take > 0:
                if not await repository.add_on_hand(session, row.id, -take):
                    raise BelowReserved(f"{warehouse_code}/{sku} changed concurrently; retry")
                remaining -= take
            if remaining == 0:
                break
    if delta != 0 or kind == "count":
        await repository.add_movement(
            session,
            {
                "warehouse_id": warehouse.id,
                "sku": sku,
                "kind": kind,
                "quantity": delta,
                "reason": reason,
                "actor": actor,
                "order_id": None,
                "created_at": clock.now(),
            },
        )
    return {
        "warehouse": warehouse_code,
        "sku": sku,
        "kind": kind,
        "delta": delta,
        "on_hand": on_hand + delta,
    }


async def configure_stock(
    session: AsyncSession,
    *,
    warehouse_code: str,
    sku: str,
    safety_stock: int | None,
    buckets: int | None,
) -> None:
    """Set safety stock and/or the number of buckets of a (warehouse, SKU).

    Buckets are rebalanced: free units are spread evenly, reserved units stay where they are.
    """
    warehouse = await get_warehouse(session, warehouse_code)
    await catalog_service.require_stockable(session, sku)
    rows = await _ensure_rows(session, warehouse.id, sku)
    if buckets is not None and buckets > len(rows):
        await repository.add_stock_rows(
            session,
            [
                {
                    "warehouse_id": warehouse.id,
                    "sku": sku,
                    "bucket": b,
                    "on_hand": 0,
                    "reserved": 0,
                    "safety_stock": 0,
                }
                for b in range(len(rows), buckets)
            ],
        )
        rows = await repository.stock_rows(session, warehouse.id, sku)
        free = sum(r.on_hand - r.reserved for r in rows)
        for row in rows:
            await repository.add_on_hand(session, row.id, -(row.on_hand - row.reserved))
        for row, part in zip(rows, _spread(free, len(rows)), strict=True):
            await repository.add_on_hand(session, row.id, part)
        rows = await repository.stock_rows(session, warehouse.id, sku)
    elif buckets is not None and buckets < len(rows):
        raise InvalidMovement("buckets can be added, not removed", field="buckets")
    if safety_stock is not None:
        if safety_stock < 0:
            raise InvalidMovement("safety stock cannot be negative", field="safety_stock")
        for row, part in zip(rows, _spread(safety_stock, len(rows)), strict=True):
            await repository.set_safety(session, row.id, part)


async def availability(session: AsyncSession, codes: list[str]) -> dict[str, dict[str, Any]]:
    """Available to sell per code over the active warehouses; a bundle's is the minimum over
    its components of floor(available / units per bundle), with the components listed."""
    bom = await catalog_service.components_of(session, codes)
    stocked = sorted({c for code in codes for c, _ in bom.get(code, [(code, 1)])})
    totals = await repository.available_totals(session, stocked) if stocked else {}
    out: dict[str, dict[str, Any]] = {}
    for code in codes:
        if code in bom:
            units, parts = catalog_service.bundle_availability(bom[code], totals)
            out[code] = {"sku": code, "bundle": True, "available": units, "components": parts}
        else:
            out[code] = {"sku": code, "bundle": False, "available": totals.get(code, 0)}
    return out


async def stock_view(session: AsyncSession, sku: str) -> dict[str, Any]:
    """Per warehouse and in total: on hand, reserved, safety stock, available to sell (for a
    bundle: what its components allow, per `availability`)."""
    bom = await catalog_service.components_of(session, [sku])
    if sku in bom:
        bundle = (await availability(session, [sku]))[sku]
        return {
            "sku": sku,
            "warehouses": [],
            "total": {"available": bundle["available"]},
            "bundle": {"components": bundle["components"]},
        }
    per = []
    totals = {"on_hand": 0, "reserved": 0, "safety_stock": 0, "available": 0}
    for warehouse, on_hand, reserved, safety, buckets in await repository.stock_of_sku(
        session, sku
    ):
        available = on_hand - reserved - safety
        per.append(
            {
                "warehouse": warehouse.code,
                "active": warehouse.active,
                "on_hand": on_hand,
                "reserved": reserved,
                "safety_stock": safety,
                "available": available,
                "buckets": buckets,
            }
        )
        for key, value in (
            ("on_hand", on_hand),
            ("reserved", reserved),
            ("safety_stock", safety),
            ("available", available),
        ):
            totals[key] += value
    return {"sku": sku, "warehouses": per, "total": totals}


async def stock_table(
    session: AsyncSession,
    *,
    sku_prefix: str | None = None,
    after: tuple[str, str] | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Stock by SKU × warehouse: on hand, reserved, safety stock, available (keyset pages)."""
    return [
        {
            "sku": sku,
            "warehouse": code,
            "on_hand": on_hand,
            "reserved": reserved,
            "safety_stock": safety,
            "available": on_hand - reserved - safety,
        }
        for sku, code, on_hand, reserved, safety in await repository.stock_page(
            session, sku_prefix, after, limit
        )
    ]


async def movements(
    session: AsyncSession,
    *,
    sku: str | None = None,
    kind: str | None = None,
    before_id: int | None = None,
    limit: int = 100,
) -> list[tuple[StockMovement, str]]:
    """The stock ledger (receipts, adjustments, counts, shipments), newest first."""
    return await repository.movements_page(
        session, sku=sku, kind=kind, before_id=before_id, limit=limit
    )


OPEN_RESERVATION_STATES = ("held", "committed")


async def open_reservations(
    session: AsyncSession,
    state: str,
    *,
    sku: str | None = None,
    warehouses: tuple[str, ...] | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Units held for unpaid orders (soonest to expire first) or committed to paid ones
    (newest first), for the reservations screen; `warehouses` narrows to a scoped caller's."""
    if state not in OPEN_RESERVATION_STATES:
        raise ValueError(f"state must be one of {OPEN_RESERVATION_STATES}")
    return [
        {
            "id": r.id,
            "order_id": r.order_id,
            "warehouse": code,
            "sku": r.sku,
            "quantity": r.quantity,
            "state": r.state,
            "expires_at": r.expires_at,
            "created_at": r.created_at,
        }
        for r, code in await repository.open_reservations(
            session, state, sku=sku, warehouses=warehouses, limit=limit
        )
    ]


# --- routing -----------------------------------------------------------------------------------


def _strategy() -> list[str]:
    strategy = list(get_settings().allocation_strategy)
    unknown = [c for c in strategy if c not in routing.CRITERIA]
    if unknown:
        raise InvalidStrategy(f"unknown allocation criteria: {', '.join(unknown)}")
    return strategy


@dataclass(slots=True)
class _Snapshot:
    """Availability read once per routing decision: candidates and their bucket rows."""

    candidates: list[routing.Candidate]
    # (warehouse_id, sku) -> [(stock id, available)] by bucket
    buckets: dict[tuple[int, str], list[tuple[int, int]]]
    codes: dict[int, str]


def _distance_km(warehouse: Any, target: tuple[float, float] | None) -> float | None:
    """How far a candidate warehouse row (its coordinates, else its province) is from a
    destination; None when either place is unknown."""
    here = (
        (warehouse.latitude, warehouse.longitude)
        if warehouse.latitude is not None and warehouse.longitude is not None
        else geo.locate(warehouse.province)
    )
    return geo.distance_km(here, target) if here and target else None


async def _snapshot(session: AsyncSession, demand: dict[str, int], ship_province: str) -> _Snapshot:
    target = geo.locate(ship_province)
    buckets: dict[tuple[int, str], list[tuple[int, int]]] = defaultdict(list)
    available: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    attributes: dict[int, Any] = {}
    for row in await repository.candidate_buckets(session, sorted(demand)):
        buckets[(row.warehouse_id, row.sku)].append((row.id, int(row.available)))
        available[row.warehouse_id][row.sku] += max(int(row.available), 0)
        attributes[row.warehouse_id] = row
    candidates = []
    for warehouse_id, row in attributes.items():
        distance = _distance_km(row, target)
        candidates.append(
            routing.Candidate(
                warehouse_id,
                row.code,
                row.priority,
                row.cost_factor,
                distance,
                dict(available[warehouse_id]),
            )
        )
    return _Snapshot(candidates, dict(buckets), {w: r.code for w, r in attributes.items()})


async def simulate(
    session: AsyncSession, ship_province: str, demand: dict[str, int]
) -> routing.Plan:
    """Answer "where would this order ship from" without reserving anything."""
    demand = catalog_service.expand(demand, await catalog_service.components_of(session, demand))
    snapshot = await _snapshot(session, demand, ship_province)
    return routing.plan(demand, snapshot.candidates, _strategy(), ship_province)


# --- the reservation lifecycle -----------------------------------------------------------------


def _expand_with(
    lines: list[LineDemand], bom: dict[str, list[tuple[str, int]]]
) -> list[LineDemand]:
    """Lines with each bundle line replaced by one line per component (same line id)."""
    if not bom:
        return lines
    out: list[LineDemand] = []
    for line in lines:
        parts = bom.get(line.sku)
        if parts is None:
            out.append(line)
        else:
            out.extend(
                LineDemand(line.line_id, line.line_no, component, line.quantity * per)
                for component, per in parts
            )
    return out


async def expand_lines(session: AsyncSession, lines: list[LineDemand]) -> list[LineDemand]:
    """Lines with each bundle line replaced by one line per component (same line id and
    number), after one read of the bundles among the lines' codes. Expanding twice changes
    nothing: a component is never a bundle."""
    bom = await catalog_service.components_of(session, {ln.sku for ln in lines})
    return _expand_with(lines, bom)


def _demand(lines: list[LineDemand]) -> dict[str, int]:
    demand: dict[str, int] = defaultdict(int)
    for line in lines:
        demand[line.sku] += line.quantity
    return dict(demand)


async def _reserve_buckets(
    session: AsyncSession,
    warehouse_id: int,
    sku: str,
    quantity: int,
    buckets: list[tuple[int, int]],
) -> list[tuple[int, int]]:
    """Reserve `quantity` of one (warehouse, SKU) using the snapshot's bucket rows; returns
    [(stock id, units)] or raises _Raced. The conditional UPDATE is the only arbiter."""
    if len(buckets) > 1:
        # Start at a random bucket so concurrent buyers of a hot SKU land on different rows.
        start = random.randrange(len(buckets))
        for stock_id, available in buckets[start:] + buckets[:start]:
            if available >= quantity and await repository.try_reserve(session, stock_id, quantity):
                return [(stock_id, quantity)]
        buckets = await repository.bucket_availability(session, warehouse_id, sku)
    elif buckets and await repository.try_reserve(session, buckets[0][0], quantity):
        return [(buckets[0][0], quantity)]
    else:
        buckets = await repository.bucket_availability(session, warehouse_id, sku)
    # Spread over several buckets, in bucket order (the fixed lock order).
    taken: list[tuple[int, int]] = []
    remaining = quantity
    for stock_id, available in buckets:
        take = min(available, remaining)
        if take > 0 and await repository.try_reserve(session, stock_id, take):
            taken.append((stock_id, take))
            remaining -= take
        if remaining == 0:
            return taken
    for stock_id, units in taken:
        await repository.unreserve(session, stock_id, units)
    raise _Raced


@dataclass(slots=True)
class Reserved:
    plan: routing.Plan
    rows: list[dict[str, Any]]
    codes: dict[int, str]


def _lock_order(snapshot: _Snapshot, item: tuple[tuple[int, str], int]) -> tuple[int, int, str]:
    """A (warehouse, SKU) group's place in the stock id lock order: its first bucket's id."""
    buckets = snapshot.buckets.get(item[0], [])
    return (min((stock_id for stock_id, _ in buckets), default=0), *item[0])


async def reserve_for_order(
    session: AsyncSession,
    *,
    order_id: int,
    lines: list[LineDemand],
    ship_province: str,
    expires_at: datetime | None,
    committed: bool = False,
    new_order: bool = True,
    only_warehouse: int | None = None,
) -> Reserved:
    """Reserve every line of an order, all or nothing, and record why each warehouse
    (`only_warehouse`: from that warehouse alone, a person's choice).

    Raises InsufficientStock when the stock is not there; the caller's transaction then rolls
    back, so nothing stays reserved. Bundle lines reserve their components.
    """
    lines = await expand_lines(session, lines)
    demand = _demand(lines)
    strategy = _strategy()
    for _attempt in range(RACE_RETRIES):
        snapshot = await _snapshot(session, demand, ship_province)
        candidates = [
            c
            for c in snapshot.candidates
            if only_warehouse is None or c.warehouse_id == only_warehouse
        ]
        plan = routing.plan(demand, candidates, strategy, ship_province)
        if not plan.ok:
            RESERVATION_FAILURES.labels("insufficient").inc()
            raise InsufficientStock(
                "not enough stock for " + ", ".join(sorted(plan.shortfall)),
                skus=[
                    {"sku": sku, "requested": demand[sku], "missing": missing}
                    for sku, missing in sorted(plan.shortfall.items())
                ],
            )
        pieces: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        try:
            # Stock rows are updated in stock id order, the one lock order of every stock
            # path (group commit's take_bulk, commit, release, consume): a (warehouse, SKU)'s
            # buckets are created together, so their ids run in bucket order, and the groups
            # go by their first id. (Buckets added later by configure_stock get later ids: for
            # such a SKU the order holds between groups, not bucket by bucket.) A
            # lost race rolls this attempt back to its savepoint, which also releases the row
            # locks it took: a retry holds nothing a concurrent order could be waiting for.
            async with session.begin_nested():
                for (warehouse_id, sku), quantity in sorted(
                    plan.allocations.items(), key=partial(_lock_order, snapshot)
                ):
                    for stock_id, units in await _reserve_buckets(
                        session,
                        warehouse_id,
                        sku,
                        quantity,
                        snapshot.buckets.get((warehouse_id, sku), []),
                    ):
                        pieces[sku].append((warehouse_id, stock_id, units))
        except _Raced:
            # Someone took the units between our read and our update: plan again.
            RESERVATION_FAILURES.labels("race_retry").inc()
            continue
        now = clock.now()
        rows = _reservation_rows(order_id, lines, pieces, expires_at, committed, now)
        await repository.add_reservations(session, rows)
        if new_order or await repository.allocation_of(session, order_id) is None:
            await repository.add_allocation(
                session,
                {
                    "order_id": order_id,
                    "strategy": ",".join(strategy),
                    "explanation": plan.explanation,
                    "created_at": now,
                },
            )
        return Reserved(plan, rows, snapshot.codes)
    RESERVATION_FAILURES.labels("insufficient").inc()
    raise InsufficientStock(
        "stock ran out while reserving " + ", ".join(sorted(demand)),
        skus=[{"sku": sku, "requested": qty} for sku, qty in sorted(demand.items())],
    )


def _reservation_rows(
    order_id: int,
    lines: list[LineDemand],
    pieces: dict[str, list[tuple[int, int, int]]],
    expires_at: datetime | None,
    committed: bool,
    now: datetime,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for sku, sku_pieces in pieces.items():
        queue = [list(p) for p in sku_pieces]
        for line in sorted((ln for ln in lines if ln.sku == sku), key=lambda ln: ln.line_no):
            need = line.quantity
            while need:
                warehouse_id, stock_id, units = queue[0]
                take = min(units, need)
                rows.append(
                    {
                        "order_id": order_id,
                        "order_line_id": line.line_id,
                        "stock_id": stock_id,
                        "warehouse_id": warehouse_id,
                        "sku": sku,
                        "quantity": take,
                        "state": "committed" if committed else "held",
                        "expires_at": None if committed else expires_at,
                        "created_at": now,
                        "updated_at": now,
                    }
                )
                need -= take
                queue[0][2] -= take
                if queue[0][2] == 0:
                    queue.pop(0)
    return rows


# --- many new orders at once (API batches, channel ingest) --------------------------------------


@dataclass(frozen=True, slots=True)
class BulkDemand:
    """One new order's demand: {sku: units} and where it ships to."""

    demand: dict[str, int]
    province: str


@dataclass(slots=True)
class BulkPlan:
    """Reservations planned for many new orders from one read of availability.

    `pieces[i]` is order i's {sku: [(warehouse id, stock id, units)]}, or None when the stock
    is not there (`shortfall[i]` says what is missing). `totals` is the units per stock row the
    whole batch takes; `take_bulk` reserves them with the same conditional UPDATE as one order.
    """

    plans: list[routing.Plan]
    pieces: list[dict[str, list[tuple[int, int, int]]] | None]
    shortfall: dict[int, list[dict[str, Any]]]
    totals: dict[int, int]
    codes: dict[int, str]
    strategy: list[str]
    # bundle code -> [(component, units per bundle)] of the bundles among the batch's codes
    bom: dict[str, list[tuple[str, int]]] = field(default_factory=dict)


def candidates_read(session: AsyncSession, skus: Iterable[str]) -> Read[list[Any]]:
    """The stock rows `plan_bulk` routes over, for SKUs it will be given, as a read that can
    ride with others (`read_together`)."""
    wanted = sorted(set(skus))
    return repository.candidate_buckets_read(session, wanted) if wanted else Read.known([])


async def plan_bulk(
    session: AsyncSession,
    demands: list[BulkDemand],
    bundles: Iterable[str] | None = None,
    candidates: list[Any] | None = None,
) -> BulkPlan:
    """Route many new orders in one read: each order in turn by `routing.plan` over what the
    orders before it left. Each (warehouse, SKU) is filled from a random bucket onwards, so two
    batches running at once mostly update different rows of a hot SKU. `bundles`: the bundle
    codes among the demands when the caller has read them already (no read when there are none);
    None to look every code up. `candidates`: the rows of `candidates_read` for (at least)
    every code of the demands, read already; read here when a bundle's components are needed."""
    strategy = _strategy()
    codes = {sku for d in demands for sku in d.demand}
    if bundles is not None:
        codes &= set(bundles)
    bom = await catalog_service.components_of(session, codes)
    if bom:
        demands = [BulkDemand(catalog_service.expand(d.demand, bom), d.province) for d in demands]
    skus = sorted({sku for d in demands for sku in d.demand})
    buckets: dict[tuple[int, str], list[list[int]]] = defaultdict(list)
    attributes: dict[int, Any] = {}
    if candidates is None or bom:
        candidates = await repository.candidate_buckets(session, skus) if skus else []
    for row in candidates:
        buckets[(row.warehouse_id, row.sku)].append([int(row.id), int(row.available)])
        attributes[row.warehouse_id] = row
    for key, rows in buckets.items():
        start = random.randrange(len(rows))
        buckets[key] = rows[start:] + rows[:start]
    by_sku: dict[str, list[int]] = defaultdict(list)
    for warehouse_id, sku in sorted(buckets):
        by_sku[sku].append(warehouse_id)
    distances: dict[tuple[int, str], float | None] = {}

    def distance(warehouse_id: int, province: str) -> float | None:
        key = (warehouse_id, province)
        if key not in distances:
            distances[key] = _distance_km(attributes[warehouse_id], geo.locate(province))
        return distances[key]

    bulk = BulkPlan(
        [], [], {}, defaultdict(int), {w: r.code for w, r in attributes.items()}, strategy, bom
    )
    for index, d in enumerate(demands):
        candidates = []
        for warehouse_id in sorted({w for sku in d.demand for w in by_sku.get(sku, [])}):
            row = attributes[warehouse_id]
            available = {
                sku: sum(max(a, 0) for _, a in buckets[(warehouse_id, sku)])
                for sku in d.demand
                if (warehouse_id, sku) in buckets
            }
            candidates.append(
                routing.Candidate(
                    warehouse_id,
                    row.code,
                    row.priority,
                    row.cost_factor,
                    distance(warehouse_id, d.province),
                    available,
                )
            )
        plan = routing.plan(d.demand, candidates, strategy, d.province)
        bulk.plans.append(plan)
        if not plan.ok:
            bulk.pieces.append(None)
            bulk.shortfall[index] = [
                {"sku": sku, "requested": d.demand[sku], "missing": missing}
                for sku, missing in sorted(plan.shortfall.items())
            ]
            continue
        pieces: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for (warehouse_id, sku), quantity in sorted(plan.allocations.items()):
            remaining = quantity
            for bucket in buckets[(warehouse_id, sku)]:
                take = min(max(bucket[1], 0), remaining)
                if take > 0:
                    bucket[1] -= take
                    bulk.totals[bucket[0]] += take
                    pieces[sku].append((warehouse_id, bucket[0], take))
                    remaining -= take
                if remaining == 0:
                    break
            assert remaining == 0, "routing planned more than the buckets hold"
        bulk.pieces.append(dict(pieces))
    return bulk


def bulk_rows(
    bulk: BulkPlan,
    index: int,
    order_id: int,
    lines: list[LineDemand],
    expires_at: datetime | None,
    committed: bool,
    now: datetime,
) -> tuple[Reserved, dict[str, Any]]:
    """Order `index`'s reservation rows (in `Reserved`, for its view) and its allocation row."""
    pieces = bulk.pieces[index]
    assert pieces is not None, "no stock was planned for this order"
    rows = _reservation_rows(
        order_id, _expand_with(lines, bulk.bom), pieces, expires_at, committed, now
    )
    plan = bulk.plans[index]
    allocation = {
        "order_id": order_id,
        "strategy": ",".join(bulk.strategy),
        "explanation": plan.explanation,
        "created_at": now,
    }
    return Reserved(plan, rows, bulk.codes), allocation


async def take_bulk(session: AsyncSession, totals: dict[int, int]) -> bool:
    """Reserve a batch's units per stock row, in stock id order (the fixed lock order), with
    the conditional UPDATE; False when a row no longer has them (the caller rolls back).
    Callers run it last before COMMIT, so the hot rows stay locked for the shortest time.
    On PostgreSQL several rows take two statements (lock in id order, then one UPDATE) instead
    of one per row."""
    wanted = {stock_id: units for stock_id, units in totals.items() if units}
    if len(wanted) > 1 and dialect_of(session) == "postgresql":
        if await repository.try_reserve_many(session, wanted):
            return True
        RESERVATION_FAILURES.labels("race_retry").inc()
        return False
    for stock_id, units in sorted(totals.items()):
        if units and not await repository.try_reserve(session, stock_id, units):
            RESERVATION_FAILURES.labels("race_retry").inc()
            return False
    return True


async def take_bulk_last(
    session: AsyncSession, totals: dict[int, int], raced: Callable[[], Exception]
) -> None:
    """`take_bulk`, raising `raced()` where it returns False. Inside a `folded_inserts` block on
    PostgreSQL the UPDATE is the block's last statement, sent with its gathered INSERTs in one
    round trip when the block ends (and `raced()` raised then): the hot rows are locked for
    that statement and the COMMIT."""
    wanted = {stock_id: units for stock_id, units in totals.items() if units}

    def short() -> None:
        RESERVATION_FAILURES.labels("race_retry").inc()
        raise raced()

    if wanted and await repository.try_reserve_many_at_end(session, wanted, short):
        return
    if not await take_bulk(session, totals):
        raise raced()


async def add_bulk_rows(
    session: AsyncSession, reservations: list[dict[str, Any]], allocations: list[dict[str, Any]]
) -> None:
    """The reservation and allocation rows of a batch, in two multi-row INSERTs."""
    if reservations:
        await repository.add_reservations(session, reservations)
    if allocations:
        await repository.add_allocation(session, allocations)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class NewOrderStock:
    """A new order to reserve from a bulk plan: its place in the plan and its written lines."""

    index: int
    order_id: int
    lines: list[LineDemand]
    province: str
    expires_at: datetime | None
    committed: bool


@dataclass(slots=True)
class BulkReservation:
    """What `reserve_new_orders` did: each reserved order's `Reserved` (for its view), the
    orders left without stock (order id -> shortfall) and the units per stock row the caller
    still has to take with `take_bulk` (empty when they were taken already)."""

    reserved: dict[int, Reserved]
    short: dict[int, list[dict[str, Any]]]
    totals: dict[int, int]


async def reserve_new_orders(
    session: AsyncSession, bulk: BulkPlan, orders: list[NewOrderStock], *, take_now: bool
) -> BulkReservation:
    """Reserve stock for many new orders as planned by `plan_bulk`: the reservation and
    allocation rows in two multi-row INSERTs, the stock rows by the batch's totals.

    `take_now=False`: the caller takes `totals` with `take_bulk` last before COMMIT (the hot
    rows stay locked only for the COMMIT) and rolls everything back when that fails.
    `take_now=True`: the totals are taken here inside a savepoint; if another writer moved a
    row meanwhile, the savepoint rolls back and every order goes through `reserve_for_order`
    one by one instead. Orders the plan (or that fallback) finds short are left unreserved.
    """
    now = clock.now()
    result = BulkReservation({}, {}, {})
    reservations: list[dict[str, Any]] = []
    allocations: list[dict[str, Any]] = []
    for order in orders:
        if order.index in bulk.shortfall:
            result.short[order.order_id] = bulk.shortfall[order.index]
            continue
        reserved, allocation = bulk_rows(
            bulk, order.index, order.order_id, order.lines, order.expires_at, order.committed, now
        )
        result.reserved[order.order_id] = reserved
        reservations.extend(reserved.rows)
        allocations.append(allocation)
    if not take_now:
        await add_bulk_rows(session, reservations, allocations)
        result.totals = dict(bulk.totals)
        return result
    try:
        async with session.begin_nested():
            await add_bulk_rows(session, reservations, allocations)
            if not await take_bulk(session, bulk.totals):
                raise _Raced
    except _Raced:
        log.info("bulk reservation raced another writer; reserving order by order")
        return await _reserve_one_by_one(session, orders)
    return result


async def _reserve_one_by_one(
    session: AsyncSession, orders: list[NewOrderStock]
) -> BulkReservation:
    result = BulkReservation({}, {}, {})
    if len(orders) > 1:
        await lock_stock(session, {ln.sku for order in orders for ln in order.lines})
    for order in orders:
        try:
            result.reserved[order.order_id] = await reserve_for_order(
                session,
                order_id=order.order_id,
                lines=order.lines,
                ship_province=order.province,
                expires_at=order.expires_at,
                committed=order.committed,
            )
        except InsufficientStock as shortage:
            result.short[order.order_id] = list(shortage.extra.get("skus", []))
    return result


async def lock_stock(session: AsyncSession, skus: set[str] | list[str]) -> None:
    """Take every stock row of these SKUs (bundles expanded to their components), in stock id
    order, before a transaction reserves for several orders one after the other.

    Each order alone locks its rows in stock id order, but one order's rows then the next's is
    not one order: a transaction reserving order A (row 9) then order B (row 3) waits on row 3
    while holding row 9, and closes a cycle with a ship that holds row 3 and wants row 9 (the
    drill's deadlock, issue 21). With the whole set locked first, every later UPDATE of the
    transaction finds its row already held."""
    if not skus:
        return
    bom = await catalog_service.components_of(session, set(skus))
    stocked = sorted({c for sku in skus for c, _ in bom.get(sku, [(sku, 1)])})
    await repository.lock_stock_of(session, stocked)


async def lock_stock_to_ship(session: AsyncSession, order_ids: list[int]) -> None:
    """Take the stock rows several orders about to ship will consume, in stock id order,
    before a transaction ships them one after the other (a shipped list)."""
    if order_ids:
        await repository.lock_committed_stock_of(session, sorted(set(order_ids)))


async def known_skus(session: AsyncSession, candidates: set[str]) -> set[str]:
    """Which of these SKU codes the catalogue knows (every stocked code has a catalogue row)."""
    return await catalog_service.known_codes(session, candidates)


async def commit_order(
    session: AsyncSession, order_id: int, lines: list[LineDemand], ship_province: str
) -> dict[str, int]:
    """Payment arrived: held reservations become committed (no expiry). Lines whose units are
    no longer held (swept after expiry, or never reserved under the hold policy) are reserved
    again, committed; returns what could not be reserved (sku -> units), normally nothing."""
    await repository.move_reservations(
        session, order_id, ("held",), "committed", clock.now(), clear_expiry=True
    )
    lines = await expand_lines(session, lines)
    have: dict[tuple[int, str], int] = defaultdict(int)
    for reservation, _ in await repository.reservations_of(session, order_id):
        if reservation.state in ("committed", "consumed"):
            have[(reservation.order_line_id, reservation.sku)] += reservation.quantity
    missing = [
        LineDemand(ln.line_id, ln.line_no, ln.sku, ln.quantity - have[(ln.line_id, ln.sku)])
        for ln in lines
        if ln.quantity > have[(ln.line_id, ln.sku)]
    ]
    if not missing:
        return {}
    try:
        await reserve_for_order(
            session,
            order_id=order_id,
            lines=missing,
            ship_province=ship_province,
            expires_at=None,
            committed=True,
            new_order=False,
        )
    except InsufficientStock:
        return _demand(missing)
    return {}


async def commit_orders(
    session: AsyncSession, demands: dict[int, tuple[list[LineDemand], str]]
) -> dict[int, dict[str, int]]:
    """`commit_order` for many orders (order id -> (lines, ship province)) in three statements
    when every line is still held, which is the common case; orders whose units were swept
    are reserved again one by one. Returns what could not be reserved, per order."""
    if not demands:
        return {}
    order_ids = sorted(demands)
    await repository.commit_held_many(session, order_ids, clock.now())
    have = await repository.committed_per_line(session, order_ids)
    bom = await catalog_service.components_of(
        session, {ln.sku for lines, _ in demands.values() for ln in lines}
    )
    to_reserve: dict[int, list[LineDemand]] = {}
    for order_id in order_ids:
        lines, _ = demands[order_id]
        missing = [
            LineDemand(
                ln.line_id, ln.line_no, ln.sku, ln.quantity - have.get((ln.line_id, ln.sku), 0)
            )
            for ln in _expand_with(lines, bom)
            if ln.quantity > have.get((ln.line_id, ln.sku), 0)
        ]
        if missing:
            to_reserve[order_id] = missing
    if len(to_reserve) > 1:
        # Several orders reserve again one after the other: one lock set, in stock id order.
        await lock_stock(session, {ln.sku for lines in to_reserve.values() for ln in lines})
    short: dict[int, dict[str, int]] = {}
    for order_id, missing in to_reserve.items():
        _, province = demands[order_id]
        try:
            await reserve_for_order(
                session,
                order_id=order_id,
                lines=missing,
                ship_province=province,
                expires_at=None,
                committed=True,
                new_order=False,
            )
        except InsufficientStock:
            short[order_id] = _demand(missing)
    return short


async def move_to_warehouse(
    session: AsyncSession,
    order_id: int,
    lines: list[LineDemand],
    ship_province: str,
    warehouse_code: str,
) -> None:
    """Ship a paid order from one warehouse (a reviewer's choice): its live reservations are
    released and its lines reserved again, committed, in that warehouse alone. Raises
    WarehouseNotFound or InsufficientStock; the caller's transaction then rolls back and
    nothing changed. The caller locks the order and its stock rows first."""
    warehouse = await get_warehouse(session, warehouse_code)
    await release_orders(session, [order_id])
    await reserve_for_order(
        session,
        order_id=order_id,
        lines=lines,
        ship_province=ship_province,
        expires_at=None,
        committed=True,
        new_order=False,
        only_warehouse=warehouse.id,
    )


async def release_order(session: AsyncSession, order_id: int) -> int:
    """The order closed or was refunded before shipping: give its units back."""
    return await release_orders(session, [order_id])


async def release_orders(session: AsyncSession, order_ids: list[int]) -> int:
    """`release_order` for several orders in one transaction, in two statements: every order's
    reservations are moved first, then the stock rows are updated once each, in stock id order
    over all of them (order by order would not be one lock order)."""
    now = clock.now()
    per_stock: dict[int, int] = defaultdict(int)
    moved = await repository.move_reservations_many(
        session, sorted(set(order_ids)), ("held", "committed"), "released", now
    )
    for _, stock_id, _, _, quantity in moved:
        per_stock[stock_id] += quantity
    await repository.unreserve_many(session, sorted(per_stock.items()))
    return sum(per_stock.values())


async def consume_order(
    session: AsyncSession, order_id: int, actor: str, *, warehouse_code: str | None = None
) -> int:
    """The order shipped: its committed units leave the warehouse, with ledger rows. With
    `warehouse_code`, only the units committed at that warehouse (a replacement shipment)."""
    if warehouse_code is None:
        return await consume_orders(session, [(order_id, actor)])
    warehouse = await get_warehouse(session, warehouse_code)
    return await consume_orders(session, [(order_id, actor)], warehouse_id=warehouse.id)


async def consume_orders(
    session: AsyncSession, shipped: list[tuple[int, str]], *, warehouse_id: int | None = None
) -> int:
    """`consume_order` for several (order id, actor) in one transaction: every order's
    reservations moved first (one statement, or one per order at one warehouse), then the ledger
    rows, then each stock row updated once, in stock id order over all the orders (one
    executemany)."""
    now = clock.now()
    actors: dict[int, str] = {}
    for order_id, actor in shipped:
        actors.setdefault(order_id, actor)
    if warehouse_id is None:
        moved = await repository.consume_committed_many(session, sorted(actors), now)
    else:
        moved = [
            (order_id, stock_id, warehouse, sku, quantity)
            for order_id in actors
            for _, stock_id, warehouse, sku, quantity in await repository.move_reservations(
                session, order_id, ("committed",), "consumed", now, warehouse_id=warehouse_id
            )
        ]
    per_stock: dict[int, int] = defaultdict(int)
    per_key: dict[int, dict[tuple[int, str], int]] = defaultdict(lambda: defaultdict(int))
    for order_id, stock_id, warehouse, sku, quantity in moved:
        per_stock[stock_id] += quantity
        per_key[order_id][(warehouse, sku)] += quantity
    movements = [
        {
            "warehouse_id": warehouse,
            "sku": sku,
            "kind": "shipment",
            "quantity": -quantity,
            "reason": "order shipped",
            "actor": actor,
            "order_id": order_id,
            "created_at": now,
        }
        for order_id, actor in actors.items()
        for (warehouse, sku), quantity in sorted(per_key[order_id].items())
    ]
    await repository.add_movements(session, movements)
    await repository.consume_many(session, sorted(per_stock.items()))  # the hot rows last
    return sum(per_stock.values())


async def sweep_expired(session: AsyncSession, now: datetime, limit: int = 1000) -> int:
    """Release held reservations past their expiry, whatever happened to their order."""
    expired = await repository.expired_held(
        session, now, limit, skip_locked=dialect_of(session) == "postgresql"
    )
    released = 0
    for reservation in sorted(expired, key=lambda r: r.stock_id):
        if await repository.release_one(session, reservation.id, now):
            await repository.unreserve(session, reservation.stock_id, reservation.quantity)
            released += 1
    return released


def reservation_expiry(deadline: datetime | None) -> datetime | None:
    """When an unpaid order's reservation may be swept."""
    if deadline is None:
        return None
    return deadline + timedelta(seconds=get_settings().reservation_grace_seconds)


def view(
    reservations: list[tuple[int, str, str, int, str, datetime | None]],
    strategy: str | None,
    explanation: dict[str, Any] | None,
) -> dict[str, Any]:
    """Reservations, shipment plan and routing explanation of an order, for its JSON, from
    (line no, warehouse code, sku, quantity, state, expires at) tuples."""
    plan: dict[str, dict[tuple[int, str], int]] = defaultdict(lambda: defaultdict(int))
    for line_no, code, sku, quantity, state, _ in reservations:
        if state != "released":
            plan[code][(line_no, sku)] += quantity
    return {
        "reservations": [
            {
                "warehouse": code,
                "line_no": line_no,
                "sku": sku,
                "quantity": quantity,
                "state": state,
                "expires_at": expires_at,
            }
            for line_no, code, sku, quantity, state, expires_at in reservations
        ],
        "shipment_plan": [
            {
                "warehouse": code,
                "lines": [
                    {"line_no": line_no, "sku": sku, "quantity": qty}
                    for (line_no, sku), qty in sorted(lines.items())
                ],
            }
            for code, lines in sorted(plan.items())
        ],
        "allocation": (
            {"strategy": strategy.split(","), **explanation}
            if strategy is not None and explanation is not None
            else None
        ),
    }


def view_of_new(reserved: Reserved | None, line_nos: dict[int, int]) -> dict[str, Any]:
    """The inventory view of an order just reserved, without reading it back."""
    if reserved is None:
        return view([], None, None)
    rows = sorted(reserved.rows, key=lambda r: line_nos.get(r["order_line_id"], 0))
    return view(
        [
            (
                line_nos.get(r["order_line_id"], 0),
                reserved.codes[r["warehouse_id"]],
                r["sku"],
                r["quantity"],
                r["state"],
                r["expires_at"],
            )
            for r in rows
        ],
        ",".join(reserved.plan.explanation["strategy"]),
        reserved.plan.explanation,
    )


async def order_view(
    session: AsyncSession, order_id: int, line_nos: dict[int, int]
) -> dict[str, Any]:
    """Reservations, the shipment plan and the routing explanation of a stored order."""
    reservations = sorted(
        await repository.reservations_of(session, order_id),
        key=lambda rc: (line_nos.get(rc[0].order_line_id, 0), rc[0].id),
    )
    allocation = await repository.allocation_of(session, order_id)
    return view(
        [
            (line_nos.get(r.order_line_id, 0), code, r.sku, r.quantity, r.state, r.expires_at)
            for r, code in reservations
        ],
        allocation.strategy if allocation else None,
        allocation.explanation if allocation else None,
    )


async def committed_by_warehouse(session: AsyncSession, order_id: int) -> dict[str, dict[int, int]]:
    """An order's committed units: per warehouse code, per order line id (fulfillment plans its
    shipments from them)."""
    out: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for reservation, code in await repository.reservations_of(session, order_id):
        if reservation.state == "committed":
            out[code][reservation.order_line_id] += reservation.quantity
    return {code: dict(lines) for code, lines in out.items()}


async def committed_by_warehouse_of_orders(
    session: AsyncSession, order_ids: list[int]
) -> dict[int, dict[str, dict[int, int]]]:
    """`committed_by_warehouse` of several orders in one query, by order id (orders with
    nothing committed are absent)."""
    out: dict[int, dict[str, dict[int, int]]] = {}
    for reservation, code in await repository.reservations_of_orders(session, order_ids):
        if reservation.state == "committed":
            lines = out.setdefault(reservation.order_id, {}).setdefault(code, {})
            lines[reservation.order_line_id] = (
                lines.get(reservation.order_line_id, 0) + reservation.quantity
            )
    return out


async def warehouses_of_order(session: AsyncSession, order_id: int) -> set[str]:
    """The codes of the warehouses holding an order's reservations."""
    return {code for _, code in await repository.reservations_of(session, order_id)}


async def warehouses_of_orders(session: AsyncSession, order_ids: list[int]) -> dict[int, set[str]]:
    """`warehouses_of_order` of many orders in one query (orders with none are absent)."""
    out: dict[int, set[str]] = defaultdict(set)
    for order_id, code in await repository.reservation_warehouses_of(session, order_ids):
        out[order_id].add(code)
    return dict(out)


async def stock_levels(session: AsyncSession) -> list[dict[str, Any]]:
    """Every (SKU, warehouse) with its on hand, reserved, safety stock and available units."""
    return [
        {
            "sku": sku,
            "warehouse": warehouse,
            "on_hand": on_hand,
            "reserved": reserved,
            "safety_stock": safety,
            "available": on_hand - reserved - safety,
        }
        for sku, warehouse, on_hand, reserved, safety in await repository.stock_levels(session)
    ]
