"""Goods coming back: returned parcels received at a warehouse (matched to a case at once
through its return waybill, or kept as unmatched parcels, 无主件, and matched later), and the
inspection per line (good units back to sellable stock, damaged units written off with a
reason), both as movements of the inventory ledger."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import refunds, repository
from ordertally.aftersales.errors import IllegalCaseTransition, InvalidCase, ParcelNotFound
from ordertally.aftersales.models import AftersaleCase, ReturnParcel
from ordertally.aftersales.schemas import Inspection, ParcelIn
from ordertally.aftersales.service import get_case, transition
from ordertally.aftersales.state_machine import CaseStatus
from ordertally.catalog import service as catalog_service
from ordertally.core import clock
from ordertally.inventory import service as inventory_service


@dataclass(frozen=True, slots=True)
class Received:
    parcel: ReturnParcel
    case: AftersaleCase | None  # None: an unmatched parcel


async def receive_parcel(session: AsyncSession, cmd: ParcelIn, actor: str) -> Received:
    """Record a parcel that came back; matched to its case when the case number or the return
    waybill names one that waits for goods, otherwise kept unmatched."""
    await inventory_service.get_warehouse(session, cmd.warehouse)
    case = None
    if cmd.case_no:
        case = await get_case(session, cmd.case_no)
    elif cmd.waybill_no:
        case = await repository.case_by_return_waybill(session, cmd.waybill_no)
    now = clock.now()
    parcel_id = await repository.insert_parcel(
        session,
        {
            "warehouse_code": cmd.warehouse,
            "carrier": cmd.carrier,
            "waybill_no": cmd.waybill_no,
            "case_id": None,
            "note": cmd.note,
            "received_by": actor,
            "received_at": now,
            "matched_at": None,
        },
    )
    if case is not None:
        case = await _match(session, parcel_id, case, actor)
    parcel = await repository.get_parcel(session, parcel_id)
    assert parcel is not None
    return Received(parcel, case)


async def match_parcel(session: AsyncSession, parcel_id: int, case_no: str, actor: str) -> Received:
    """Tie an unmatched parcel to the case it belongs to (the case then counts as returned)."""
    parcel = await repository.get_parcel(session, parcel_id)
    if parcel is None:
        raise ParcelNotFound(f"returned parcel {parcel_id} does not exist")
    if parcel.case_id is not None:
        raise InvalidCase(f"parcel {parcel_id} is matched already")
    case = await _match(session, parcel_id, await get_case(session, case_no), actor)
    fresh = await repository.get_parcel(session, parcel_id)
    assert fresh is not None
    return Received(fresh, case)


async def _match(
    session: AsyncSession, parcel_id: int, case: AftersaleCase, actor: str
) -> AftersaleCase:
    if case.status != CaseStatus.AWAITING_RETURN:
        raise IllegalCaseTransition(
            f"case {case.case_no} is {case.status}, not waiting for goods", case_status=case.status
        )
    if not await repository.match_parcel(session, parcel_id, case.id, clock.now()):
        raise InvalidCase(f"parcel {parcel_id} is matched already")
    for line in await repository.lines_of(session, case.id):
        await repository.add_received(session, line.id, line.quantity - line.received_quantity)
    await repository.update_case(session, case.id, {"goods_status": "seller_received"})
    return await transition(session, case, "receive", actor, detail={"parcel_id": parcel_id})


async def inspect(
    session: AsyncSession, case_no: str, cmd: Inspection, actor: str
) -> AftersaleCase:
    """Inspect a returned case per line: good units back to sellable stock (a `return`
    movement), damaged ones received and written off (an `adjustment` with the reason). Every
    received unit must be accounted for."""
    case = await get_case(session, case_no)
    if case.status != CaseStatus.RETURNED:
        raise IllegalCaseTransition(
            f"case {case.case_no} is {case.status}, not returned", case_status=case.status
        )
    lines = {line.line_no: line for line in await repository.lines_of(session, case.id)}
    # A bundle line comes back as its components: the ledger knows only stocked codes.
    bom = await catalog_service.components_of(session, [line.sku for line in lines.values()])
    given = {item.line_no: item for item in cmd.lines}
    if set(given) != set(lines):
        raise InvalidCase("the inspection names every line of the case", field="lines")
    for line_no, item in sorted(given.items()):
        line = lines[line_no]
        if item.good + item.damaged != line.received_quantity:
            raise InvalidCase(
                f"line {line_no}: {line.received_quantity} received, "
                f"{item.good + item.damaged} inspected",
                field="lines",
            )
        if item.damaged and not item.reason:
            raise InvalidCase(f"line {line_no}: damaged units need a reason", field="lines")
        if not await repository.add_inspected(session, line.id, item.good, item.damaged):
            raise InvalidCase(f"line {line_no} was inspected already", field="lines")
        for sku, per in bom.get(line.sku, [(line.sku, 1)]):
            units = (item.good + item.damaged) * per
            if units:
                await inventory_service.record_movement(
                    session,
                    warehouse_code=cmd.warehouse,
                    sku=sku,
                    kind="return",
                    quantity=units,
                    reason=f"after-sales {case.case_no} line {line_no}",
                    actor=actor,
                )
            if item.damaged:
                await inventory_service.record_movement(
                    session,
                    warehouse_code=cmd.warehouse,
                    sku=sku,
                    kind="adjustment",
                    quantity=-item.damaged * per,
                    reason=f"written off: {item.reason} ({case.case_no} line {line_no})"[:200],
                    actor=actor,
                )
    extra = {"responsibility": cmd.responsibility.value} if cmd.responsibility else {}
    inspected = await transition(
        session,
        case,
        "inspect",
        actor,
        detail={
            "warehouse": cmd.warehouse,
            "lines": [
                {"line_no": i.line_no, "good": i.good, "damaged": i.damaged, "reason": i.reason}
                for i in cmd.lines
            ],
        },
        extra=extra,
    )
    # Refunded first: the case is settled now that its goods are accounted for.
    return await refunds.settle_case(session, inspected, actor)


async def unmatched(session: AsyncSession, limit: int = 100) -> list[ReturnParcel]:
    """Parcels received without a case (无主件), oldest first."""
    return await repository.unmatched_parcels(session, limit)
