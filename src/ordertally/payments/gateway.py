"""Provider dispatch: which providers are configured, opening an attempt at one, asking one
what became of an attempt. Nothing here takes a session: callers ask the providers between
their transactions, never inside one."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from ordertally.core.settings import Settings, get_settings
from ordertally.payments.errors import ProviderOff
from ordertally.payments.models import PROVIDERS, Payment
from ordertally.payments.providers import (
    ProviderCallFailed,
    QueryResult,
    RefundResult,
    alipay,
    wechatpay,
)

QUERY_CONCURRENCY = 8


def provider_config(provider: str, settings: Settings | None = None) -> Any:
    """The provider's configuration, or None when it is off."""
    settings = settings or get_settings()
    if provider == "wechatpay":
        return wechatpay.configured(settings)
    if provider == "alipay":
        return alipay.configured(settings)
    return None


def configuration_problems(settings: Settings | None = None) -> list[str]:
    """Why a partly or wrongly configured provider is off (empty when all is well)."""
    settings = settings or get_settings()
    return [*wechatpay.problems(settings), *alipay.problems(settings)]


def enabled_providers(settings: Settings | None = None) -> list[str]:
    """Providers that are fully configured."""
    return [p for p in PROVIDERS if provider_config(p, settings) is not None]


def notify_url(provider: str, settings: Settings | None = None) -> str:
    """Where the provider sends its notifications."""
    settings = settings or get_settings()
    base = settings.payment_notify_base_url or f"http://{settings.host}:{settings.port}"
    return f"{base.rstrip('/')}/callbacks/{provider}"


async def request_provider_params(
    payment: Payment, expires_at: datetime | None = None
) -> dict[str, Any]:
    """Open the attempt at the provider (QR code); returns what a client shows the buyer.
    `expires_at`, the order's payment deadline, becomes the trade's own expiry at the provider."""
    config = provider_config(payment.provider)
    if config is None:
        raise ProviderOff(f"{payment.provider} is not configured")
    description = f"ordertally {payment.order_no}"
    url = notify_url(payment.provider)
    if payment.provider == "wechatpay":
        return await wechatpay.create_native(
            config, payment.out_trade_no, payment.amount_minor, description, url, expires_at
        )
    return await alipay.precreate(
        config, payment.out_trade_no, payment.amount_minor, description, url, expires_at
    )


async def query_remote(payment: Payment) -> QueryResult:
    """Ask the provider what became of an attempt (signature of the answer verified)."""
    config = provider_config(payment.provider)
    if config is None:
        raise ProviderCallFailed(f"{payment.provider} is not configured")
    if payment.provider == "wechatpay":
        return await wechatpay.query(config, payment.out_trade_no)
    return await alipay.query(config, payment.out_trade_no)


async def query_many(payments: list[Payment]) -> list[QueryResult | Exception]:
    """Query several attempts concurrently (bounded); failures come back as exceptions."""
    gate = asyncio.Semaphore(QUERY_CONCURRENCY)

    async def one(payment: Payment) -> QueryResult | Exception:
        async with gate:
            try:
                return await query_remote(payment)
            except (ProviderCallFailed, OSError, ValueError) as exc:
                return exc

    return list(await asyncio.gather(*(one(p) for p in payments)))


async def refund_remote(
    provider: str,
    out_trade_no: str,
    out_refund_no: str,
    amount_minor: int,
    total_minor: int,
    reason: str,
) -> RefundResult:
    """Ask the provider to refund part of a paid attempt under our refund number (the
    provider's idempotency key: sending it again never refunds twice)."""
    config = provider_config(provider)
    if config is None:
        raise ProviderCallFailed(f"{provider} is not configured")
    if provider == "wechatpay":
        return await wechatpay.refund(
            config,
            out_trade_no,
            out_refund_no,
            amount_minor,
            total_minor,
            notify_url(provider),
            reason,
        )
    return await alipay.refund(config, out_trade_no, out_refund_no, amount_minor, reason)


async def query_refund_remote(provider: str, out_trade_no: str, out_refund_no: str) -> RefundResult:
    """Ask the provider what became of a refund (signature of the answer verified)."""
    config = provider_config(provider)
    if config is None:
        raise ProviderCallFailed(f"{provider} is not configured")
    if provider == "wechatpay":
        return await wechatpay.query_refund(config, out_refund_no)
    return await alipay.query_refund(config, out_trade_no, out_refund_no)
