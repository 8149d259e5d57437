"""Pinduoduo pdd.order.number.list.increment.get: order shapes -> CanonicalOrder, the client.

Times are Beijing-time strings ("2023-11-20 23:58:12") or unix seconds; amounts are yuan, as
numbers (DOUBLE in the POP documentation's example) or strings; while an order awaits shipping
the receiver fields are ciphertext and the display values are `*_mask`. The window is
start/end_updated_at in unix seconds, at most 30 minutes, ending at least 3 minutes behind
the platform clock; pages are walked from the last one backwards.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

import httpx

from ordertally.channels.adapters.common import (
    AdapterError,
    beijing_utc,
    is_ciphertext,
    minor,
    text,
)
from ordertally.channels.canonical import (
    CanonicalAddress,
    CanonicalLine,
    CanonicalOrder,
    PlatformStatus,
)

API = "pdd.order.number.list.increment.get"
TIME_API = "pdd.time.get"
DECRYPT_API = "pdd.open.decrypt.batch"
# After-sale records by update time: same window rules as the order increment (30 minutes at
# most, unix seconds), page_size at most 100 (POP documentation, 售后API).
REFUND_API = "pdd.refund.list.increment.get"
DECRYPT_BATCH = 100  # data_list entries per call ("默认列表大小不超过100")
MAX_WINDOW = timedelta(minutes=30)
MIN_LAG = timedelta(minutes=3)
MAX_PAGE_SIZE = 100
CURRENCY = "CNY"
# Error codes treated as "slow down" (back off like a 429), from the error table of the POP
# API documentation (pdd.order.list.get page): 70031 调用过于频繁, 52101 当前接口被限流.
RATE_LIMIT_CODES = frozenset({70031, 52101})


def status_of(doc: dict[str, Any]) -> PlatformStatus:
    """A Pinduoduo order's status in canonical words."""
    if int(doc.get("refund_status") or 1) == 4:
        return PlatformStatus.REFUNDED
    raw_confirm = doc.get("confirm_status")
    confirm = 1 if raw_confirm is None else int(raw_confirm)
    if confirm == 2:
        return PlatformStatus.CANCELLED
    if confirm == 0:
        return PlatformStatus.UNPAID
    shipped = int(doc.get("order_status") or 1)
    return {2: PlatformStatus.SHIPPED, 3: PlatformStatus.DELIVERED}.get(
        shipped, PlatformStatus.PAID
    )


def to_canonical(doc: dict[str, Any]) -> CanonicalOrder:
    """A Pinduoduo order as a canonical order."""
    try:
        external_id = text(doc["order_sn"])
        updated_at = beijing_utc(doc["updated_at"])
        placed_at = beijing_utc(
            doc.get("created_time") or doc.get("confirm_time") or doc["updated_at"]
        )
    except KeyError as exc:
        raise AdapterError(f"Pinduoduo order lacks {exc.args[0]!r}") from exc
    lines = tuple(
        CanonicalLine(
            platform_sku=text(item.get("outer_id")) or f"pdd-sku-{text(item.get('sku_id'))}",
            quantity=int(item.get("goods_count") or 0),
            unit_price_minor=minor(item.get("goods_price"), CURRENCY),
            title=text(item.get("goods_name"))[:200],
        )
        for item in doc.get("item_list") or []
    )
    status = status_of(doc)
    # Awaiting shipment, receiver_* and address are the platform's ciphertext and the display
    # values are the *_mask fields; otherwise they are empty (or, in the old schema, masked).
    encrypted = {k: str(doc[k]) for k in ENCRYPTED_FIELDS if is_ciphertext(doc.get(k))}
    phone = _display(doc, "receiver_phone")
    name = _display(doc, "receiver_name")
    pay_time = text(doc.get("pay_time") or doc.get("confirm_time"))
    return CanonicalOrder(
        platform="pinduoduo",
        external_id=external_id,
        status=status,
        currency=CURRENCY,
        lines=lines,
        buyer_name=name,
        buyer_phone=phone,
        address=CanonicalAddress(
            name=name,
            phone=phone,
            province=text(doc.get("province")),
            city=text(doc.get("city")),
            district=text(doc.get("town")),
            line1=_display(doc, "receiver_address") or _display(doc, "address"),
            country="CN",
        ),
        placed_at=placed_at,
        updated_at=updated_at,
        paid_at=beijing_utc(pay_time) if pay_time and status is not PlatformStatus.UNPAID else None,
        # discount_amount = platform + seller + group-leader discounts; order_change_amount is
        # the merchant's price change, already taken off goods_amount (POP docs: goods_amount =
        # goods_price * goods_count - order_change_amount).
        discount_minor=minor(doc.get("discount_amount"), CURRENCY)
        + minor(doc.get("order_change_amount"), CURRENCY),
        shipping_minor=minor(doc.get("postage"), CURRENCY),
        fee_minor=sum(
            minor(fee.get("service_fee"), CURRENCY)
            for fee in doc.get("service_fee_detail") or []
            if isinstance(fee, dict)
        ),
        # pay_amount: what the buyer paid (POP docs: goods_amount - discount_amount + postage +
        # service fees).
        platform_total_minor=(
            minor(doc["pay_amount"], CURRENCY) if doc.get("pay_amount") not in (None, "") else None
        ),
        # The increment API gives no buyer id; an open id, when a gateway adds one, is used.
        buyer_platform_id=text(doc.get("buyer_id") or doc.get("open_id")),
        encrypted=encrypted,
        raw=doc,
    )


ENCRYPTED_FIELDS = ("receiver_name", "receiver_phone", "receiver_address", "address")


def _display(doc: dict[str, Any], key: str) -> str:
    """The display value of a receiver field: its `*_mask`, else the field unless it is
    ciphertext."""
    masked = text(doc.get(f"{key}_mask"))
    if masked:
        return masked
    value = text(doc.get(key))
    return "" if is_ciphertext(value) else value


def decrypt_answer(
    response: httpx.Response, asked: list[tuple[str, str]]
) -> tuple[dict[tuple[str, str], str], dict[tuple[str, str], str]]:
    """pdd.open.decrypt.batch's answer for the (data_tag, encrypted_data) pairs asked: the
    plaintexts, and why each other pair failed. An entry is decrypted when its `error_code` is
    0 and it has `decrypted_data` (the POP SDK's OpenDecryptBatchResponseDataDecryptListItem:
    data_tag, data_type, decrypted_data, encrypted_data, error_code, error_msg)."""
    if response.status_code >= 400:
        raise AdapterError(f"decrypt answered HTTP {response.status_code}")
    try:
        doc = response.json()
    except ValueError as exc:
        raise AdapterError("decrypt answered non-JSON") from exc
    error = doc.get("error_response") if isinstance(doc, dict) else None
    if error:
        reason = f"pinduoduo error {error.get('error_code')}: {error.get('error_msg')}"
        return {}, dict.fromkeys(asked, reason)
    body = (doc.get("open_decrypt_batch_response") or {}) if isinstance(doc, dict) else {}
    plain: dict[tuple[str, str], str] = {}
    failed: dict[tuple[str, str], str] = {}
    for entry in body.get("data_decrypt_list") or []:
        if not isinstance(entry, dict):
            continue
        key = (text(entry.get("data_tag")), text(entry.get("encrypted_data")))
        code = entry.get("error_code")
        value = entry.get("decrypted_data")
        if (code in (None, 0, "0")) and isinstance(value, str) and value:
            plain[key] = value
        else:
            failed[key] = f"decrypt error {code}: {text(entry.get('error_msg')) or 'no plaintext'}"
    for key in asked:
        if key not in plain and key not in failed:
            failed[key] = "decrypt answered nothing for it"
    return plain, failed


def sign(params: dict[str, Any], client_secret: str) -> str:
    """POP signature: MD5 of secret + sorted key/value pairs + secret, upper-case hex."""
    joined = "".join(f"{k}{params[k]}" for k in sorted(params) if k != "sign")
    return hashlib.md5(f"{client_secret}{joined}{client_secret}".encode()).hexdigest().upper()


class PinduoduoClient:
    """The POP router over HTTP; base URL, client id and secret come from the account."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        client_id: str,
        client_secret: str,
        access_token: str,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_token = access_token

    async def call(self, api: str, params: dict[str, Any]) -> httpx.Response:
        body: dict[str, Any] = {
            "type": api,
            "client_id": self.client_id,
            "access_token": self.access_token,
            "timestamp": str(int(datetime.now().timestamp())),
            "data_type": "JSON",
            **{k: str(v) for k, v in params.items()},
        }
        body["sign"] = sign(body, self.client_secret)
        return await self.http.post(f"{self.base_url}/api/router", data=body)

    async def decrypt_batch(self, items: list[tuple[str, str]]) -> httpx.Response:
        """The decrypt hook: pdd.open.decrypt.batch for (order_sn, ciphertext) pairs (at most
        100); answers `open_decrypt_batch_response.data_decrypt_list` of {data_tag,
        encrypted_data, decrypted_data}. Only where the platform grants the app decryption."""
        return await self.call(
            DECRYPT_API,
            {
                "data_list": json.dumps(
                    [{"data_tag": tag, "encrypted_data": data} for tag, data in items[:100]]
                )
            },
        )

    async def increment(
        self, start: datetime, end: datetime, *, page: int, page_size: int
    ) -> httpx.Response:
        return await self.call(
            API,
            {
                "start_updated_at": int(start.timestamp()),
                "end_updated_at": int(end.timestamp()),
                "page": page,
                "page_size": min(page_size, MAX_PAGE_SIZE),
                "order_status": 5,
                "refund_status": 5,
                "is_lucky_flag": 0,
            },
        )

    async def refund_increment(
        self,
        start: datetime,
        end: datetime,
        *,
        status: int,
        page: int,
        page_size: int,
        case_type: int = 1,
    ) -> httpx.Response:
        """pdd.refund.list.increment.get: after-sale records of one `after_sales_status` (a
        required parameter) updated in [start, end]; `after_sales_type` 1 is every type."""
        return await self.call(
            REFUND_API,
            {
                "start_updated_at": int(start.timestamp()),
                "end_updated_at": int(end.timestamp()),
                "after_sales_status": status,
                "after_sales_type": case_type,
                "page": page,
                "page_size": min(page_size, MAX_PAGE_SIZE),
            },
        )
