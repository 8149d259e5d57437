"""The channel simulators' state and rules, independent of HTTP.

- Shopify: orders it creates are sent as signed webhooks (X-Shopify-Topic, -Hmac-Sha256,
  -Webhook-Id, -Triggered-At, -Event-Id) to a target URL, retried on non-2xx on Shopify's
  schedule (scaled), and sent twice with the same webhook id on command.
- Amazon: getOrders over the orders it holds by LastUpdateDate, with NextToken paging,
  MaxResultsPerPage <= 100, LastUpdatedBefore at least 2 minutes before now, and 429 on command;
  getOrderItems per order; the Reports API 2021-06-30 for the seller-fulfilled returns report
  (createReport of GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE over the returns it holds by
  return request date, getReport DONE at once, getReportDocument with the document's URL),
  the document tab-separated with the columns of Amazon's returns report attributes page.
- Pinduoduo: pdd.order.number.list.increment.get with windows <= 30 minutes ending >= 3 minutes
  before the platform clock, page/page_size paging, signed requests, and pdd.time.get;
  pdd.refund.list.increment.get over the after-sale records it holds by update time (window
  <= 30 minutes, one required after_sales_status, after_sales_type 1 for every type), items
  in the shape of the POP documentation's response example (amounts in yuan, as strings).
- Taobao, JD and Douyin: their after-sale list APIs (simulators/aftersale_lists.py).

Times come from `ordertally.core.clock`, so tests move both sides together.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import hmac
import itertools
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson

from ordertally.channels.adapters import pinduoduo
from ordertally.channels.adapters.amazon import RETURNS_COLUMNS, RETURNS_REPORT
from ordertally.channels.adapters.common import beijing_utc, to_beijing_string
from ordertally.channels.simulators.aftersale_lists import AfterSaleListSim
from ordertally.core import clock, outbound
from ordertally.simkit.errors import SimError
from ordertally.simkit.misbehaviour import Outage

# Shopify retries a failed webhook 8 times over about 4 hours (seconds before each retry).
SHOPIFY_RETRIES = (10, 30, 60, 300, 900, 1800, 3600, 7200)
AMAZON_MIN_LAG = timedelta(minutes=2)
PDD_MAX_WINDOW = timedelta(minutes=30)
PDD_MIN_LAG = timedelta(minutes=3)
# pdd.open.decrypt.batch data_type: 5 收件人, 6 收件人手机号, 7 收件人完整地址, 8 收件人详细地址.
PDD_DATA_TYPES = {"receiver_name": 5, "receiver_phone": 6, "address": 7, "receiver_address": 8}


def _report_date(at: datetime) -> str:
    """A date as the returns report writes it: 14-Jul-2025."""
    return at.astimezone(UTC).strftime("%d-%b-%Y")


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(value: str, name: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise SimError(400, "InvalidInput", f"{name} is not ISO 8601") from exc
    if parsed.tzinfo is None:
        raise SimError(400, "InvalidInput", f"{name} must carry a zone (UTC)")
    return parsed.astimezone(UTC)


# --- Shopify -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Delivery:
    webhook_id: str
    topic: str
    order_id: str
    attempt: int
    status: int | None
    error: str | None = None


@dataclass
class ShopifySim:
    target_url: str = ""
    secret: str = ""
    time_scale: float = 1000.0
    failures: Outage = field(default_factory=Outage)  # attempts that fail whatever the answer
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: list[Delivery] = field(default_factory=list)
    ids: itertools.count[int] = field(
        default_factory=lambda: itertools.count(820_982_911_946_154_508)
    )
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def new_order(
        self,
        *,
        sku: str = "TEA-LJ-250",
        quantity: int = 1,
        price: str = "59.90",
        phone: str = "+8613812345678",
        customer_id: int = 207119551,
        financial_status: str = "paid",
        currency: str = "CNY",
    ) -> dict[str, Any]:
        now = clock.now().astimezone(UTC)
        order_id = next(self.ids)
        doc: dict[str, Any] = {
            "id": order_id,
            "name": f"#{1000 + len(self.orders) + 1}",
            "email": "buyer@example.com",
            "created_at": now.isoformat(),
            "updated_at": now.isoformat(),
            "processed_at": now.isoformat(),
            "currency": currency,
            "financial_status": financial_status,
            "fulfillment_status": None,
            "cancelled_at": None,
            "total_discounts": "0.00",
            "total_price": str(Decimal(price) * quantity),
            "line_items": [
                {
                    "id": order_id * 10 + 1,
                    "variant_id": 39072856,
                    "sku": sku,
                    "title": "西湖龙井",
                    "quantity": quantity,
                    "price": price,
                }
            ],
            "shipping_lines": [],
            "shipping_address": {
                "first_name": "三",
                "last_name": "张",
                "name": "张三",
                "phone": phone,
                "address1": "世纪大道1号",
                "address2": "",
                "city": "上海市",
                "province": "上海市",
                "zip": "200120",
                "country_code": "CN",
            },
            "customer": {"id": customer_id, "first_name": "三", "last_name": "张"},
        }
        self.orders[str(order_id)] = doc
        return doc

    def update(self, order_id: str, **changes: Any) -> dict[str, Any]:
        doc = self.orders[order_id]
        doc.update(changes)
        doc["updated_at"] = clock.now().astimezone(UTC).isoformat()
        return doc

    def sign(self, body: bytes) -> str:
        digest = hmac.new(self.secret.encode(), body, hashlib.sha256).digest()
        return base64.b64encode(digest).decode()

    def send(
        self, topic: str, order_id: str, *, copies: int = 1, webhook_id: str | None = None
    ) -> str:
        """Deliver a webhook (in the background, with retries); `copies` > 1 sends the same
        webhook id again, as Shopify sometimes does."""
        webhook_id = webhook_id or str(uuid.uuid4())
        body = httpx.Request("POST", "http://x", json=self.orders[order_id]).content
        for _ in range(copies):
            task = asyncio.create_task(self._deliver(topic, order_id, webhook_id, body))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return webhook_id

    async def _deliver(self, topic: str, order_id: str, webhook_id: str, body: bytes) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Shopify-Topic": topic,
            "X-Shopify-Hmac-Sha256": self.sign(body),
            "X-Shopify-Webhook-Id": webhook_id,
            "X-Shopify-Shop-Domain": "ordertally-sim.myshopify.com",
            "X-Shopify-API-Version": "2024-01",
            "X-Shopify-Triggered-At": clock.now().isoformat(),
            "X-Shopify-Event-Id": str(uuid.uuid4()),
        }
        http = outbound.client("channelsim-shopify", timeout=5.0)
        for attempt, delay in enumerate((0, *SHOPIFY_RETRIES), start=1):
            if delay:
                await asyncio.sleep(delay / self.time_scale)
            status: int | None = None
            error = None
            if self.failures.take():
                error = "simulated network failure"
            else:
                try:
                    response = await http.post(self.target_url, content=body, headers=headers)
                    status = response.status_code
                except httpx.HTTPError as exc:
                    error = str(exc) or type(exc).__name__
            self.deliveries.append(Delivery(webhook_id, topic, order_id, attempt, status, error))
            if status is not None and 200 <= status < 300:
                return

    async def settle(self) -> None:
        while self.tasks:
            await asyncio.gather(*list(self.tasks), return_exceptions=True)


# --- Amazon ------------------------------------------------------------------------------------


@dataclass
class AmazonSim:
    access_token: str = "sim-amazon-token"  # a fixed token an operator may supply
    # Login with Amazon: the refresh token and app credentials exchanged for access tokens.
    lwa_client_id: str = "amzn1.application-oa2-client.sim"
    lwa_client_secret: str = "sim-lwa-secret"
    refresh_token: str = "Atzr|sim-refresh-token"
    token_lifetime: int = 3600
    issued: dict[str, datetime] = field(default_factory=dict)  # access token -> expiry
    lwa_requests: int = 0
    # Tokens API: whether the application has the PII role; RDTs issued (token -> expiry).
    pii_role: bool = True
    rdts: dict[str, datetime] = field(default_factory=dict)
    pii_visible: bool = True
    marketplace_id: str = "ATVPDKIKX0DER"
    throttle: Outage = field(default_factory=Outage)  # requests answered "too many"
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    items: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    tokens: dict[str, tuple[list[str], int]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)

    # Reports API: return rows held (report columns -> value), reports made, documents.
    returns: list[dict[str, str]] = field(default_factory=list)
    reports: dict[str, dict[str, Any]] = field(default_factory=dict)
    documents: dict[str, str] = field(default_factory=dict)

    def put(self, order: dict[str, Any], items: list[dict[str, Any]]) -> None:
        self.orders[order["AmazonOrderId"]] = copy.deepcopy(order)
        self.items[order["AmazonOrderId"]] = copy.deepcopy(items)

    def add(
        self,
        order_id: str,
        updated: datetime,
        *,
        status: str = "Unshipped",
        sku: str = "TEA-LJ-250",
        quantity: int = 1,
        amount: str = "59.90",
        currency: str = "CNY",
    ) -> None:
        self.put(
            {
                "AmazonOrderId": order_id,
                "PurchaseDate": _iso(updated - timedelta(minutes=1)),
                "LastUpdateDate": _iso(updated),
                "OrderStatus": status,
                "FulfillmentChannel": "MFN",
                "MarketplaceId": self.marketplace_id,
                "OrderTotal": {"CurrencyCode": currency, "Amount": amount},
                "ShippingAddress": {
                    "Name": "张三",
                    "AddressLine1": "世纪大道1号",
                    "City": "上海市",
                    "StateOrRegion": "上海市",
                    "PostalCode": "200120",
                    "CountryCode": "CN",
                    "Phone": "13812345678",
                },
                "BuyerInfo": {
                    "BuyerEmail": f"{order_id}@marketplace.amazon.example",
                    "BuyerName": "张三",
                },
            },
            [
                {
                    "ASIN": "B000000000",
                    "OrderItemId": f"{order_id}-1",
                    "SellerSKU": sku,
                    "Title": "西湖龙井",
                    "QuantityOrdered": quantity,
                    "ItemPrice": {"CurrencyCode": currency, "Amount": amount},
                }
            ],
        )

    def lwa_token(self, form: dict[str, str]) -> dict[str, Any]:
        """POST /auth/o2/token: grant_type=refresh_token exchanged for an access token."""
        self.lwa_requests += 1
        if form.get("grant_type") != "refresh_token":
            raise SimError(400, "unsupported_grant_type", "The grant type is not supported")
        if (form.get("client_id"), form.get("client_secret")) != (
            self.lwa_client_id,
            self.lwa_client_secret,
        ):
            raise SimError(401, "invalid_client", "Client authentication failed")
        if form.get("refresh_token") != self.refresh_token:
            raise SimError(400, "invalid_grant", "The request has an invalid grant parameter")
        token = "Atza|" + secrets.token_urlsafe(24)
        self.issued[token] = clock.now() + timedelta(seconds=self.token_lifetime)
        return {
            "access_token": token,
            "refresh_token": self.refresh_token,
            "token_type": "bearer",
            "expires_in": self.token_lifetime,
        }

    def restricted_data_token(self, token: str | None, body: dict[str, Any]) -> dict[str, Any]:
        """POST /tokens/2021-03-01/restrictedDataToken: an RDT for getOrders' PII."""
        self._auth(token)
        if not self.pii_role:
            raise SimError(403, "Unauthorized", "Application does not have access to PII")
        resources = body.get("restrictedResources") or []
        if not resources or resources[0].get("path") != "/orders/v0/orders":
            raise SimError(400, "InvalidInput", "restrictedResources must name /orders/v0/orders")
        rdt = "Atz.sprdt|" + secrets.token_urlsafe(24)
        self.rdts[rdt] = clock.now() + timedelta(hours=1)
        return {"restrictedDataToken": rdt, "expiresIn": 3600}

    def _as_seen(self, order: dict[str, Any]) -> dict[str, Any]:
        return copy.deepcopy(order) if self.pii_visible else self._without_pii(order)

    def _without_pii(self, order: dict[str, Any]) -> dict[str, Any]:
        """An order as SP-API answers it without an RDT: no name, lines or phone."""
        doc = copy.deepcopy(order)
        ship = doc.get("ShippingAddress")
        if ship:
            doc["ShippingAddress"] = {
                k: v
                for k, v in ship.items()
                if k in ("City", "StateOrRegion", "PostalCode", "CountryCode")
            }
        doc.pop("BuyerInfo", None)
        return doc

    def expire_tokens(self) -> None:
        """Every issued access token expires now (the next call answers 403)."""
        for token in self.issued:
            self.issued[token] = clock.now() - timedelta(seconds=1)

    def _auth(self, token: str | None) -> None:
        if token is not None and token == self.access_token:
            return
        rdt = self.rdts.get(token or "")
        if rdt is not None and clock.now() < rdt:
            return
        expiry = self.issued.get(token or "")
        if expiry is None or clock.now() >= expiry:
            raise SimError(403, "Unauthorized", "Access to requested resource is denied.")

    def _throttle(self) -> None:
        if self.throttle.take():
            raise SimError(
                429, "QuotaExceeded", "You exceeded your quota for the requested resource."
            )

    def get_orders(self, params: dict[str, str], token: str | None) -> dict[str, Any]:
        self._auth(token)
        # PII comes with an RDT (or the operator's fixed token); an LWA token alone gets none.
        self.pii_visible = token == self.access_token or (token or "") in self.rdts
        self._throttle()
        self.requests.append(dict(params))
        if params.get("NextToken"):
            entry = self.tokens.pop(params["NextToken"], None)
            if entry is None:
                raise SimError(400, "InvalidInput", "Invalid NextToken")
            ids, offset = entry
            size = int(params.get("MaxResultsPerPage") or 100)
            return self._page(ids, offset, size)
        if not params.get("MarketplaceIds"):
            raise SimError(400, "InvalidInput", "MarketplaceIds is required")
        created, updated = params.get("CreatedAfter"), params.get("LastUpdatedAfter")
        if bool(created) == bool(updated):
            raise SimError(400, "InvalidInput", "Exactly one of CreatedAfter and LastUpdatedAfter")
        size = int(params.get("MaxResultsPerPage") or 100)
        if not 1 <= size <= 100:
            raise SimError(400, "InvalidInput", "MaxResultsPerPage must be 1 to 100")
        now = clock.now()
        field_name = "LastUpdateDate" if updated else "PurchaseDate"
        after = _parse_iso(updated or created or "", "After")
        before_raw = params.get("LastUpdatedBefore" if updated else "CreatedBefore")
        before = _parse_iso(before_raw, "Before") if before_raw else now - AMAZON_MIN_LAG
        if before < after:
            raise SimError(400, "InvalidInput", "Before must be after After")
        if before > now - AMAZON_MIN_LAG:
            raise SimError(400, "InvalidInput", "Before must be at least 2 minutes before now")
        ids = sorted(
            (
                o["AmazonOrderId"]
                for o in self.orders.values()
                if after <= _parse_iso(o[field_name], field_name) <= before
            ),
            key=lambda i: (self.orders[i][field_name], i),
        )
        return self._page(ids, 0, size)

    def _page(self, ids: list[str], offset: int, size: int) -> dict[str, Any]:
        chunk = ids[offset : offset + size]
        payload: dict[str, Any] = {"Orders": [self._as_seen(self.orders[i]) for i in chunk]}
        if offset + size < len(ids):
            token = secrets.token_urlsafe(16)
            self.tokens[token] = (ids, offset + size)
            payload["NextToken"] = token
        return {"payload": payload}

    def add_return(
        self,
        order_id: str,
        rma: str,
        requested: datetime,
        *,
        sku: str = "TEA-LJ-250",
        quantity: int = 1,
        status: str = "Approved",
        resolution: str = "StandardRefund",
        refunded: str = "",
        currency: str = "USD",
        reason: str = "AMZ-PG-BAD-DESC",
    ) -> None:
        """A returned item of a seller-fulfilled order, as one row of the returns report (a
        return of several items is several rows with the same RMA)."""
        order = self.orders.get(order_id)
        tracking = int(hashlib.sha256(rma.encode()).hexdigest(), 16) % 10**18
        self.returns.append(
            {
                "Order ID": order_id,
                "Order date": _report_date(
                    _parse_iso(order["PurchaseDate"], "PurchaseDate") if order else requested
                ),
                "Return request date": _report_date(requested),
                "Return request status": status,
                "Amazon RMA ID": rma,
                "Merchant RMA ID": " ",
                "Label type": "AmazonPrePaidLabel",
                "Label cost": "4.14",
                "Currency code": currency,
                "Return carrier": "USPS",
                "Tracking ID": f"9202{tracking:018d}",
                "Label to be paid by": "Seller",
                "A-to-Z Claim": "N",
                "Is prime": "N",
                "ASIN": "B000000000",
                "Merchant SKU": sku,
                "Item Name": "西湖龙井",
                "Return quantity": str(quantity),
                "Return Reason": reason,
                "In policy": "Y",
                "Return type": "C-Returns",
                "Resolution": resolution,
                "Invoice number": " ",
                "Return delivery date": " ",
                "Order Amount": (order or {}).get("OrderTotal", {}).get("Amount", ""),
                "Order quantity": str(quantity),
                "Refunded Amount": refunded,
                "_requested": _iso(requested),
            }
        )

    def create_report(self, body: dict[str, Any], token: str | None) -> dict[str, Any]:
        """POST /reports/2021-06-30/reports: only the returns report by return date."""
        self._auth(token)
        self._throttle()
        if body.get("reportType") != RETURNS_REPORT:
            raise SimError(400, "InvalidInput", f"reportType must be {RETURNS_REPORT} here")
        if not body.get("marketplaceIds"):
            raise SimError(400, "InvalidInput", "marketplaceIds is required")
        now = clock.now()
        start = _parse_iso(
            str(body.get("dataStartTime") or _iso(now - timedelta(days=60))), "dataStartTime"
        )
        end = _parse_iso(str(body.get("dataEndTime") or _iso(now)), "dataEndTime")
        if end < start:
            raise SimError(400, "InvalidInput", "dataEndTime is before dataStartTime")
        rows = [r for r in self.returns if start <= _parse_iso(r["_requested"], "requested") <= end]
        report_id = str(50_000_000_000 + len(self.reports) + 1)
        document_id = f"amzn1.spdoc.1.4.na.{uuid.uuid4()}"
        lines = ["\t".join(RETURNS_COLUMNS)]
        lines += ["\t".join(r.get(c, "") for c in RETURNS_COLUMNS) for r in rows]
        self.documents[document_id] = "\n".join(lines) + "\n"
        self.reports[report_id] = {
            "reportId": report_id,
            "reportType": RETURNS_REPORT,
            "dataStartTime": _iso(start),
            "dataEndTime": _iso(end),
            "marketplaceIds": list(body["marketplaceIds"]),
            "createdTime": _iso(now),
            "processingStatus": "DONE",
            "processingStartTime": _iso(now),
            "processingEndTime": _iso(now),
            "reportDocumentId": document_id,
        }
        return {"reportId": report_id}

    def get_report(self, report_id: str, token: str | None) -> dict[str, Any]:
        """GET /reports/2021-06-30/reports/{reportId}."""
        self._auth(token)
        report = self.reports.get(report_id)
        if report is None:
            raise SimError(404, "NotFound", "Report not found")
        return copy.deepcopy(report)

    def get_report_document(self, document_id: str, token: str | None, base: str) -> dict[str, Any]:
        """GET /reports/2021-06-30/documents/{reportDocumentId}: where to download it."""
        self._auth(token)
        if document_id not in self.documents:
            raise SimError(404, "NotFound", "Report document not found")
        return {
            "reportDocumentId": document_id,
            "url": f"{base}/sim/amazon/documents/{document_id}",
        }

    def get_order_items(self, order_id: str, token: str | None) -> dict[str, Any]:
        self._auth(token)
        self._throttle()
        if order_id not in self.orders:
            raise SimError(404, "NotFound", "Order not found")
        return {
            "payload": {
                "AmazonOrderId": order_id,
                "OrderItems": copy.deepcopy(self.items[order_id]),
            }
        }


# --- Pinduoduo ---------------------------------------------------------------------------------


@dataclass
class PddSim:
    client_id: str = "sim-pdd-client"
    client_secret: str = "sim-pdd-secret"
    throttle: Outage = field(default_factory=Outage)  # requests answered "too many"
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[dict[str, str]] = field(default_factory=list)
    plaintexts: dict[str, str] = field(default_factory=dict)  # ciphertext -> value
    kinds: dict[str, int] = field(default_factory=dict)  # ciphertext -> decrypt data_type
    # The shop's decrypt quota is spent or the app lacks the permission: every decrypt call is
    # answered with an error_response (code 20031, as the POP docs list it).
    decrypt_denied: bool = False
    decrypt_calls: int = 0
    relay_calls: int = 0  # decrypt calls that came through the merchant's relay (hook)
    # Called as each decrypt call is answered (tests look at the caller's state then).
    on_decrypt: Callable[[], None] | None = None
    refunds: dict[int, dict[str, Any]] = field(default_factory=dict)  # after-sale id -> item
    # Called as each refund list call is answered (tests look at the caller's state then).
    on_refunds: Callable[[], None] | None = None

    def add_refund(
        self,
        refund_id: int,
        order_sn: str,
        updated: datetime,
        *,
        after_sales_type: int = 2,
        after_sales_status: int = 10,
        refund_amount: str = "59.90",
        sku: str = "TEA-LJ-250",
        quantity: int = 1,
        reason: str = "不想要了",
    ) -> None:
        """An after-sale record (or a new version of one: same id, later update)."""
        self.refunds[refund_id] = {
            "id": refund_id,
            "order_sn": order_sn,
            "after_sales_type": after_sales_type,
            "after_sales_status": after_sales_status,
            "after_sale_reason": reason,
            "confirm_time": to_beijing_string(updated - timedelta(days=2)),
            "created_time": to_beijing_string(updated - timedelta(hours=1)),
            "updated_time": to_beijing_string(updated),
            "discount_amount": "0.00",
            "dispute_refund_status": 0,
            "good_image": "",
            "goods_id": 1,
            "goods_name": "西湖龙井",
            "goods_number": str(quantity),
            "goods_price": refund_amount,
            "order_amount": refund_amount,
            "outer_goods_id": "",
            "outer_id": sku,
            "refund_amount": refund_amount,
            "refund_operator_role": 2,
            "shipping_name": "",
            "sku_id": "2",
            "speed_refund_flag": 0,
            "speed_refund_status": "",
            "tracking_number": "",
            "user_shipping_status": "2",
        }

    def add(
        self,
        order_sn: str,
        updated: datetime,
        *,
        sku: str = "TEA-LJ-250",
        quantity: int = 1,
        price: str = "59.90",
        phone: str = "138****1234",
        receiver_phone: str = "13812341234",
    ) -> None:
        """An order awaiting shipment (or its next version: same order_sn, later update);
        `phone` is the mask the platform shows, `receiver_phone` what decrypt answers."""
        # Awaiting shipment: receiver fields are ciphertext, the display values are *_mask.
        secret = {
            "receiver_name": "王小明",
            "receiver_phone": receiver_phone,
            "receiver_address": "文三路100号",
            "address": "浙江省杭州市西湖区文三路100号",
        }
        sealed = {k: self._seal(k, v) for k, v in secret.items()}
        self.orders[order_sn] = {
            "order_sn": order_sn,
            "confirm_status": 1,
            "order_status": 1,
            "refund_status": 1,
            "created_time": to_beijing_string(updated - timedelta(minutes=1)),
            "confirm_time": to_beijing_string(updated - timedelta(minutes=1)),
            "pay_time": to_beijing_string(updated - timedelta(minutes=1)),
            "updated_at": to_beijing_string(updated),
            **sealed,
            "receiver_name_mask": "王**",
            "receiver_phone_mask": phone,
            "receiver_address_mask": "文三路***号",
            "address_mask": "浙江省杭州市西湖区文三路***号",
            "province": "浙江省",
            "city": "杭州市",
            "town": "西湖区",
            # Amounts are DOUBLE in the POP documentation's response example.
            "pay_amount": float(Decimal(price) * quantity),
            "goods_amount": float(Decimal(price) * quantity),
            "discount_amount": 0.0,
            "postage": 0.0,
            "order_change_amount": 0.0,
            "service_fee_detail": [],
            "item_list": [
                {
                    "goods_id": 1,
                    "sku_id": 2,
                    "outer_id": sku,
                    "goods_name": "西湖龙井",
                    "goods_price": float(Decimal(price)),
                    "goods_count": quantity,
                }
            ],
        }

    @staticmethod
    def error(code: int, message: str) -> dict[str, Any]:
        return {
            "error_response": {
                "error_code": code,
                "error_msg": message,
                "request_id": uuid.uuid4().hex,
            }
        }

    def _seal(self, key: str, value: str) -> str:
        """A ciphertext in the platform's shape (phones "$...$...$0$$", others "~...~...~0~~")."""
        mark = "$" if key == "receiver_phone" else "~"
        body = base64.b64encode(hashlib.sha256(f"{key}:{value}".encode()).digest()).decode()
        sealed = f"{mark}{body[:12]}{mark}{body}{mark}0{mark}{mark}"
        self.plaintexts[sealed] = value
        self.kinds[sealed] = PDD_DATA_TYPES.get(key, 0)
        return sealed

    def _decrypt(self, form: dict[str, str]) -> dict[str, Any]:
        """The answer's shape follows the POP SDK's PddOpenDecryptBatchResponse (data_tag,
        data_type, decrypted_data, encrypted_data, error_code, error_msg)."""
        self.decrypt_calls += 1
        if self.on_decrypt is not None:
            self.on_decrypt()
        if self.decrypt_denied:
            return self.error(20031, "用户没有授权访问此接口")
        try:
            items = orjson.loads(form.get("data_list") or "[]")
        except orjson.JSONDecodeError:
            return self.error(10000, "data_list is not JSON")
        if not isinstance(items, list) or not 1 <= len(items) <= 100:
            return self.error(10000, "data_list: 1 to 100 entries")
        answers = []
        for item in items:
            sealed = str(item.get("encrypted_data"))
            known = sealed in self.plaintexts
            answers.append(
                {
                    "data_tag": item.get("data_tag"),
                    "data_type": self.kinds.get(sealed, 0),
                    "decrypted_data": self.plaintexts[sealed] if known else "",
                    "encrypted_data": sealed,
                    "error_code": 0 if known else 1000001,
                    "error_msg": "" if known else "解密失败 / cannot decrypt",
                }
            )
        return {"open_decrypt_batch_response": {"data_decrypt_list": answers}}

    def call(self, form: dict[str, str]) -> dict[str, Any]:
        self.requests.append(dict(form))
        if form.get("client_id") != self.client_id or form.get("sign") != pinduoduo.sign(
            form, self.client_secret
        ):
            return self.error(10019, "签名错误 / invalid sign")
        api = form.get("type")
        if api == pinduoduo.TIME_API:
            return {"time_get_response": {"time": to_beijing_string(clock.now())}}
        if api == pinduoduo.DECRYPT_API:
            return self._decrypt(form)
        if api == pinduoduo.REFUND_API:
            if self.throttle.take():
                return self.error(70031, "调用过于频繁 / calls too frequent")
            return self._refunds(form)
        if api != pinduoduo.API:
            return self.error(10000, f"unknown type {api}")
        if self.throttle.take():
            return self.error(70031, "调用过于频繁 / calls too frequent")
        try:
            start = datetime.fromtimestamp(int(form["start_updated_at"]), UTC)
            end = datetime.fromtimestamp(int(form["end_updated_at"]), UTC)
            page = int(form.get("page") or 1)
            size = int(form.get("page_size") or 100)
        except (KeyError, ValueError):
            return self.error(10000, "start_updated_at/end_updated_at are required unix seconds")
        if end < start or end - start > PDD_MAX_WINDOW:
            return self.error(10000, "时间跨度不能超过30分钟 / window over 30 minutes")
        if end > clock.now() - PDD_MIN_LAG:
            return self.error(10000, "结束时间须早于系统时间3分钟 / end within 3 minutes of now")
        if not 1 <= size <= 100 or page < 1:
            return self.error(10000, "page_size 1..100, page >= 1")
        matching = sorted(
            (o for o in self.orders.values() if start <= beijing_utc(o["updated_at"]) <= end),
            key=lambda o: (o["updated_at"], o["order_sn"]),
        )
        chunk = matching[(page - 1) * size : page * size]
        return {
            "order_sn_increment_get_response": {
                "total_count": len(matching),
                "has_next": page * size < len(matching),
                "order_sn_list": copy.deepcopy(chunk),
            }
        }

    def _refunds(self, form: dict[str, str]) -> dict[str, Any]:
        """pdd.refund.list.increment.get over the held after-sale records."""
        if self.on_refunds is not None:
            self.on_refunds()
        try:
            start = datetime.fromtimestamp(int(form["start_updated_at"]), UTC)
            end = datetime.fromtimestamp(int(form["end_updated_at"]), UTC)
            status = int(form["after_sales_status"])
            case_type = int(form["after_sales_type"])
            page = int(form.get("page") or 1)
            size = int(form.get("page_size") or 100)
        except (KeyError, ValueError):
            return self.error(
                10000,
                "参数错误: start_updated_at, end_updated_at, after_sales_status and "
                "after_sales_type are required integers",
            )
        if end < start or end - start > PDD_MAX_WINDOW:
            return self.error(10000, "时间跨度不能超过30分钟 / window over 30 minutes")
        if not 1 <= size <= 100 or page < 1:
            return self.error(10000, "page_size 1..100, page >= 1")
        matching = sorted(
            (
                r
                for r in self.refunds.values()
                if start <= beijing_utc(r["updated_time"]) <= end
                and r["after_sales_status"] == status
                and case_type in (1, r["after_sales_type"])
            ),
            key=lambda r: (r["updated_time"], r["id"]),
        )
        chunk = matching[(page - 1) * size : page * size]
        return {
            "refund_increment_get_response": {
                "refund_list": copy.deepcopy(chunk),
                "total_count": len(matching),
            }
        }


@dataclass
class ChannelSim:
    shopify: ShopifySim = field(default_factory=ShopifySim)
    amazon: AmazonSim = field(default_factory=AmazonSim)
    pdd: PddSim = field(default_factory=PddSim)
    # Taobao, JD and Douyin after-sale lists (simulators/aftersale_lists.py).
    lists: AfterSaleListSim = field(default_factory=AfterSaleListSim)

    def reset(self) -> None:
        scale = self.shopify.time_scale
        self.shopify = ShopifySim(time_scale=scale)
        self.amazon = AmazonSim()
        self.pdd = PddSim()
        self.lists = AfterSaleListSim()
