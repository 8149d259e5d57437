"""Payment use cases: open an attempt, keep the provider's answer, read an order's payments,
housekeeping. The rest of the domain lives along its seams: `gateway` (provider dispatch),
`inbox` (storing notifications), `apply` (applying them once), `compensation` (active queries
and the last query before close), `manual` (manual recovery by two people), `reconcile`.

Services receive a session and never commit; the caller's boundary does. Calls to a provider
take no session: the boundary calls them between its transactions.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock
from ordertally.core.settings import get_settings
from ordertally.orders import service as orders_service
from ordertally.orders.models import SalesOrder
from ordertally.orders.state_machine import Status
from ordertally.payments import repository
from ordertally.payments.errors import OrderNotPayable, ProviderOff, UnsupportedCurrency

# Re-exported for callers outside payments (app.py, ops/doctor.py) that read the providers'
# configuration through the domain's service.
from ordertally.payments.gateway import (  # noqa: F401
    configuration_problems,
    enabled_providers,
    provider_config,
)
from ordertally.payments.models import Payment
from ordertally.payments.state_machine import OPENED

CURRENCIES = frozenset({"CNY"})


async def open_attempt(
    session: AsyncSession, order: SalesOrder, provider: str, actor_id: str
) -> tuple[Payment, bool]:
    """Start (or reuse the open) attempt to pay an order through a provider; True if new.
    The caller has read the order (and checked the caller's scope)."""
    settings = get_settings()
    if provider_config(provider, settings) is None:
        raise ProviderOff(f"{provider} is not configured")
    if order.status != Status.PENDING_PAYMENT:
        raise OrderNotPayable(
            f"order {order.order_no} is {order.status}", order_status=order.status
        )
    if order.currency not in CURRENCIES:
        raise UnsupportedCurrency(
            f"{provider} takes CNY; order {order.order_no} is in {order.currency}"
        )
    # One read of the order's attempts gives both the open one to reuse and the next number.
    attempts = await repository.payments_of_order(session, order.id)
    for existing in reversed(attempts):
        if existing.provider == provider and existing.state == OPENED:
            return existing, False
    now = clock.now()
    seq = len(attempts) + 1
    values: dict[str, Any] = {
        "order_id": order.id,
        "order_no": order.order_no,
        "provider": provider,
        "out_trade_no": f"{order.order_no}P{seq:02d}",
        "amount_minor": order.total_minor,
        "currency": order.currency,
        "state": OPENED.value,
        "provider_txn_id": None,
        "paid_amount_minor": None,
        "paid_at": None,
        "settles_order": False,
        "refunded_minor": 0,
        "provider_params": None,
        "deadline_at": order.payment_deadline_at,
        "next_query_at": now + timedelta(seconds=settings.payment_query_after_seconds),
        "query_count": 0,
        "last_query_at": None,
        "last_query_state": None,
        "last_error": None,
        "created_by": actor_id,
        "created_at": now,
        "updated_at": now,
    }
    payment_id = await repository.insert_payment(session, values)
    return Payment(id=payment_id, **values), True


async def store_provider_params(
    session: AsyncSession, payment_id: int, params: dict[str, Any] | None, error: str | None
) -> Payment:
    """Keep the provider's answer to opening an attempt (a failure closes the attempt)."""
    payment = await repository.set_provider_params(session, payment_id, params, error, clock.now())
    if payment is None:  # no longer open (a notification or a query got there first)
        payment = await repository.get_payment(session, payment_id)
    assert payment is not None
    return payment


async def payments_of(session: AsyncSession, order_no: str) -> dict[str, Any]:
    """An order's attempts, the notifications about them, refunds and manual requests."""
    order = await orders_service.get_order(session, order_no)
    payments = await repository.payments_of_order(session, order.id)
    notifications = await repository.notifications_for(session, [p.out_trade_no for p in payments])
    refunds = await repository.refunds_of(session, [p.id for p in payments])
    return {
        "order": order,
        "payments": payments,
        "notifications": notifications,
        "refunds": refunds,
    }


async def awaiting_notification(session: AsyncSession, order_id: int) -> bool:
    """Whether a buyer's attempt is still open and no notification about it has arrived (the
    tracking page then says the status is being verified)."""
    open_attempts = [
        p for p in await repository.payments_of_order(session, order_id) if p.state == OPENED
    ]
    if not open_attempts:
        return False
    heard = await repository.notifications_for(session, [p.out_trade_no for p in open_attempts])
    return not heard


# --- housekeeping ----------------------------------------------------------------------------


async def purge_nonces(session: AsyncSession, now: datetime) -> int:
    """Forget nonces past the replay window."""
    return await repository.purge_nonces(session, now)


async def count_overdue_queries(session: AsyncSession, before: datetime) -> int:
    """Attempts whose active query has been due since before a moment."""
    return await repository.count_overdue_queries(session, before)


async def inbox_backlog(session: AsyncSession) -> tuple[int, datetime | None]:
    """Notifications stored but not yet applied, and the oldest one's arrival."""
    return await repository.inbox_backlog(session)


async def payment_ids_of(session: AsyncSession, order_ids: list[int]) -> dict[int, list[str]]:
    """out_trade_no and provider transaction id of each attempt, by order id (search)."""
    found: dict[int, list[str]] = {}
    for p in await repository.payments_of_orders(session, order_ids):
        found.setdefault(p.order_id, []).extend(i for i in (p.out_trade_no, p.provider_txn_id) if i)
    return found
