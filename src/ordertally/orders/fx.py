"""Exchange rates to the base currency: rows with effective dates (`fx_rate`), edited by the API
and the CLI, over the `ORDERTALLY_FX_RATES` setting (the seed: a currency without a row uses
it). An order locks the rate in force when it is created."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock, money
from ordertally.core.settings import Settings
from ordertally.orders import repository
from ordertally.orders.errors import InvalidFxRate
from ordertally.orders.models import FxRate


async def rates_at(
    session: AsyncSession, settings: Settings, at: datetime, currencies: Iterable[str] = ()
) -> dict[str, Decimal]:
    """Every rate in force at `at`: the table's over the setting's (one read). Given the
    `currencies` about to be converted, none of them foreign, nothing is read: the base
    currency's rate is 1 whatever the table says (the group commit's common case)."""
    if currencies and all(c == settings.base_currency for c in currencies):
        return dict(settings.fx_rates)
    rows = await repository.fx_rates_at(session, settings.base_currency, at)
    merged = dict(settings.fx_rates)
    merged.update({currency: Decimal(rate) for currency, rate in rows.items()})
    return merged


async def set_rate(
    session: AsyncSession,
    settings: Settings,
    currency: str,
    rate: str,
    *,
    effective_from: datetime | None,
    by: str,
) -> FxRate:
    """Record a rate from `effective_from` (now when None); refuses the base currency, an
    unknown currency and a rate that is not a positive decimal."""
    currency = money.check_currency(currency.upper())
    if currency == settings.base_currency:
        raise InvalidFxRate(f"{currency} is the base currency", field="currency")
    try:
        value = Decimal(rate)
    except (InvalidOperation, ValueError) as exc:
        raise InvalidFxRate(f"{rate!r} is not a decimal rate", field="rate") from exc
    if not value.is_finite() or value <= 0:
        raise InvalidFxRate("a rate must be positive", field="rate")
    now = clock.now()
    return await repository.upsert_fx_rate(
        session,
        {
            "currency": currency,
            "base_currency": settings.base_currency,
            "rate": str(money.quantize_rate(value)),
            "effective_from": effective_from or now,
            "created_by": by,
            "created_at": now,
        },
    )


async def list_rates(session: AsyncSession, settings: Settings) -> list[FxRate]:
    """Every recorded rate to the base currency."""
    return await repository.list_fx_rates(session, settings.base_currency)
