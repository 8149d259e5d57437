"""Settings read from ORDERTALLY_* environment variables (and an optional .env file)."""

from __future__ import annotations

import base64
import functools
import secrets
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything an operator can configure; defaults run the embedded mode."""

    model_config = SettingsConfigDict(
        env_prefix="ORDERTALLY_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Path("./var")
    database_url: str = ""
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_echo: bool = False

    host: str = "127.0.0.1"
    port: int = 8000

    payment_timeout_seconds: int = Field(default=1800, ge=60)
    timezone: str = "Asia/Shanghai"
    base_currency: str = "CNY"
    # Rates to the base currency, e.g. {"USD": "7.1043"}; an order locks the rate at creation.
    fx_rates: dict[str, Decimal] = Field(default_factory=dict)

    # Base64 of 32 random bytes. When empty, a key is generated once under data_dir (dev only).
    pii_key: str = ""
    pii_key_id: str = "k1"

    idempotency_ttl_hours: int = Field(default=24, ge=1)
    duplicate_window_seconds: int = Field(default=600, ge=0)
    duplicate_policy: Literal["flag", "reject"] = "flag"
    # Concurrent POST /orders of one process are created together in one transaction, up to
    # this many (group commit, ADR 0022); 0 creates every order in its own transaction.
    order_batch_max: int = Field(default=200, ge=0, le=1000)
    # Concurrent carrier pushes of one process are stored together in one transaction, up to
    # this many (group commit, ADR 0049); 0 stores every push in its own transaction.
    tracking_push_batch_max: int = Field(default=100, ge=0, le=1000)
    # Concurrent POST /shipments/{id}/ship of one process are applied together in one
    # transaction, up to this many (group commit, ADR 0050); 0 ships each in its own.
    ship_batch_max: int = Field(default=100, ge=0, le=1000)
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    max_event_bytes: int = Field(default=51_200, ge=1024)
    api_key_cache_seconds: float = Field(default=30.0, ge=0)

    worker_poll_seconds: float = Field(default=0.5, gt=0)
    worker_batch_size: int = Field(default=100, ge=1, le=10_000)
    # The search lane (search/lane.py, one per worker process): dirty-order rows claimed per
    # batch, and how often an idle lane reads whether any is waiting.
    search_lane_batch: int = Field(default=500, ge=1, le=10_000)
    search_lane_poll_seconds: float = Field(default=0.05, gt=0)
    outbox_max_attempts: int = Field(default=20, ge=1)
    outbox_backoff_base_seconds: float = Field(default=2.0, gt=0)
    outbox_backoff_max_seconds: float = Field(default=600.0, gt=0)
    scheduler_tick_seconds: int = Field(default=60, ge=1)
    # Extra modules whose import registers consumers or jobs (plugins).
    plugin_modules: list[str] = Field(default_factory=list)

    # Inventory: what to do when stock is short ("reject" the order, or create it on "hold").
    stock_shortage_policy: Literal["reject", "hold"] = "reject"
    # Warehouse choice, in order: fewest_splits, nearest, priority, cost.
    allocation_strategy: list[str] = Field(
        default_factory=lambda: ["fewest_splits", "nearest", "priority", "cost"]
    )
    # Bucket rows for a new (warehouse, SKU) stock record; raise it for hot SKUs.
    stock_buckets_default: int = Field(default=1, ge=1, le=64)
    # Unpaid reservations outlive the payment deadline by this much before the sweep frees them.
    reservation_grace_seconds: int = Field(default=300, ge=0)

    # Payments. A provider is on only when every one of its settings is given (else its
    # callback answers 404). Paths name PEM files; the platform keys directory holds
    # `<serial>.pem` public keys or certificates (several at once, for rotation).
    wechatpay_mchid: str = ""
    wechatpay_appid: str = ""
    wechatpay_apiv3_key: str = ""
    wechatpay_platform_keys_dir: str = ""
    wechatpay_merchant_key_file: str = ""
    wechatpay_merchant_serial: str = ""
    wechatpay_api_base: str = "https://api.mch.weixin.qq.com"
    alipay_app_id: str = ""
    alipay_seller_id: str = ""
    alipay_public_key_file: str = ""
    alipay_app_private_key_file: str = ""
    alipay_gateway: str = "https://openapi.alipay.com/gateway.do"
    # Where the platforms send notifications: <this>/callbacks/<provider>; empty = http://host:port.
    payment_notify_base_url: str = ""
    # Signed notifications and responses older or newer than this are refused (replay window).
    payment_signature_window_seconds: int = Field(default=300, ge=30, le=3600)
    # Alipay notify_time window; 0 = not checked (Alipay resends for 25 h, dedupe absorbs it).
    alipay_notify_max_age_seconds: int = Field(default=0, ge=0)
    # Compensation: query attempts without a result after this long, then every `every`.
    payment_query_after_seconds: int = Field(default=300, ge=1)
    payment_query_every_seconds: int = Field(default=900, ge=1)
    payment_query_batch: int = Field(default=100, ge=1, le=5000)
    payment_http_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # A payment that arrives for an order already closed: "refund" (finance case) or "reopen".
    payment_paid_after_close_policy: Literal["refund", "reopen"] = "refund"
    payment_max_notification_bytes: int = Field(default=65_536, ge=1024)
    # After-sales (aftersales/policy.py has the defaults these override). Days after delivery
    # before the scheduler confirms receipt, per channel; days after that a buyer may still
    # open a case; types refunded before the goods are back ("refund first", the others wait
    # for the warehouse's receipt); refunds above this need finance (minor units, 0 = never);
    # hours a case may stay in a status before an exception case opens; seconds before a sent
    # refund without a notification is asked about.
    aftersales_confirm_days: dict[str, int] = Field(default_factory=dict)
    aftersales_window_days: dict[str, int] = Field(default_factory=dict)
    aftersales_refund_first: list[str] = Field(default_factory=lambda: ["refund_only", "refused"])
    aftersales_finance_approval_above_minor: int = Field(default=0, ge=0)
    aftersales_sla_hours: dict[str, int] = Field(default_factory=dict)
    aftersales_refund_query_after_seconds: int = Field(default=60, ge=0)

    # Broker relay (production): every outbox event is also published to a broker for other
    # processes and systems. Empty = off; amqp(s)://... = RabbitMQ; nats://... or tls://... =
    # NATS JetStream. See docs/adr/0007-broker-relay.md.
    broker_url: str = ""
    # RabbitMQ: the durable topic exchange; routing key = event type.
    broker_exchange: str = Field(default="ordertally.events", pattern=r"^[A-Za-z0-9_.:-]{1,255}$")
    # NATS: the JetStream stream (created if missing) and the subject prefix it captures
    # (events go to <prefix>.<EventType>).
    broker_stream: str = Field(default="ORDERTALLY_EVENTS", pattern=r"^[A-Za-z0-9_-]{1,255}$")
    broker_subject_prefix: str = Field(
        default="ordertally.events", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
    )
    # Bound on connecting and on waiting for the broker's confirm / publish ack.
    broker_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # After a connection failure, publishes fail at once for this long before reconnecting.
    broker_retry_seconds: float = Field(default=2.0, ge=0, le=600)

    # --- fulfillment (issue 5): carriers, tracking, tracking page ---
    # A paid order gets its shipments and moves to `allocated` by itself (off: operators or an
    # ERP allocate; the payments tests keep orders at `paid`).
    fulfillment_auto_allocate: bool = True
    # The adapter that creates waybills and tracks parcels ("kuaidi100" when configured);
    # "manual": warehouses bring their own waybill numbers and nothing is tracked.
    fulfillment_carrier: Literal["kuaidi100", "manual"] = "kuaidi100"
    # Carrier company per warehouse code ({"WH-SZ": "shunfeng"}), else the default below.
    fulfillment_company_by_warehouse: dict[str, str] = Field(default_factory=dict)
    fulfillment_default_company: str = Field(default="zhongtong", pattern=r"^[a-z0-9_]{1,32}$")
    # Sender printed on waybills (the merchant's return address).
    fulfillment_sender_name: str = "ordertally"
    fulfillment_sender_phone: str = "13800000000"
    fulfillment_sender_address: str = "江苏省 苏州市 工业园区 星湖街 1 号"
    # Waybill and subscription retries back off from base to cap seconds; never given up.
    fulfillment_retry_base_seconds: float = Field(default=30.0, gt=0)
    fulfillment_retry_cap_seconds: float = Field(default=1800.0, gt=0)
    # After this many failed waybill attempts an exception case tells the operators.
    fulfillment_waybill_alert_attempts: int = Field(default=5, ge=1)
    # Carrier calls in flight at once, and shipments handled per job run.
    fulfillment_carrier_concurrency: int = Field(default=8, ge=1, le=64)
    fulfillment_batch: int = Field(default=200, ge=1, le=5000)
    # Ask the carrier about a tracked parcel without news this often (at least the carrier's own
    # minimum interval), and call a shipped parcel without any tracking stale after this long.
    fulfillment_poll_interval_seconds: int = Field(default=7200, ge=60)
    fulfillment_stale_after_seconds: int = Field(default=86_400, ge=60)
    # The base of links we hand out (tracking page, carrier callbacks), e.g. https://oms.example.com.
    public_base_url: str = "http://127.0.0.1:8000"
    # Kuaidi100
    # Tracking API customer id (signs real-time queries).
    kuaidi100_customer: str = ""
    # Authorization key (subscriptions, queries, waybill API).
    kuaidi100_key: str = ""
    # Our salt for push signs (sign = MD5(param + salt)); sent with each subscription.
    kuaidi100_salt: str = ""
    # Electronic waybill (label API) secret.
    kuaidi100_secret: str = ""
    # API base URL (e.g. the carrier simulator's); empty = Kuaidi100 off.
    kuaidi100_api_base: str = ""
    # Per-request HTTP timeout towards Kuaidi100.
    kuaidi100_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # Kuaidi100 allows one real-time query per waybill every 30 minutes.
    kuaidi100_min_query_interval_seconds: int = Field(default=1800, ge=0)

    # --- notify (issue 5): Apprise URLs, SMS gateway, templates ---
    # Operations channels: JSON list of {"name"?, "url" (Apprise), "events": [...], "lang"?,
    # "webhook"? (WeCom/DingTalk: an http(s) URL case cards are posted to instead of the
    # platform's own webhook, e.g. a relay)}.
    notify_ops_targets: list[dict[str, str | list[str]]] = Field(default_factory=list)
    # Language of messages when a target names none: "zh" (Simplified Chinese) or "en".
    notify_default_lang: Literal["zh", "en"] = "zh"
    # Buyer SMS gateway: "off" or "aliyun" (needs every aliyun_sms_* credential below).
    notify_sms_provider: Literal["off", "aliyun"] = "off"
    # Language of the buyer SMS preview stored in the send log (the gateway's template decides).
    notify_sms_lang: Literal["zh", "en"] = "zh"
    # Rows the sender claims per run, how many attempts before `dead`, and the backoff base.
    notify_send_batch: int = Field(default=50, ge=1, le=1000)
    notify_max_attempts: int = Field(default=8, ge=1, le=100)
    notify_backoff_base_seconds: float = Field(default=30.0, gt=0)
    # Backoff cap between two attempts of one message.
    notify_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    # Bound on one call to a channel or gateway.
    notify_http_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Aliyun SMS (Dysmsapi SendSms, RPC signature v1) credentials and API base.
    aliyun_sms_access_key_id: str = ""
    aliyun_sms_access_key_secret: str = ""
    aliyun_sms_sign_name: str = ""
    aliyun_sms_endpoint: str = "https://dysmsapi.aliyuncs.com"
    # Approved template code per event, e.g. {"OrderPaid": "SMS_123"}; no code = no SMS then.
    aliyun_sms_template_codes: dict[str, str] = Field(default_factory=dict)
    # Messages of one template a sender round sends in one SendBatchSms call (the platform takes
    # up to 100 numbers a call); 1 sends each message alone through SendSms.
    aliyun_sms_batch_size: int = Field(default=100, ge=1, le=100)

    # --- channels (issue 6): accounts, sync engine, simulators ---
    channels_ingest_chunk: int = 1000  # orders per ingest transaction
    # An unpaid platform order is closed by our timeout only after this long (the platform
    # closes its own unpaid orders; this backstops a lost cancellation). 72 h.
    channels_unpaid_deadline_seconds: int = Field(default=259_200, ge=60)
    channels_sync_interval_seconds: int = 300  # default pull period of a new account
    channels_sync_overlap_seconds: int = 600  # default window re-read to catch late writes
    channels_sync_page_size: int = 100  # default page size asked of the platform
    channels_rate_limit_per_second: float = 1.0  # default requests/s per account (token bucket)
    channels_rate_limit_burst: int = 5  # default token bucket size per account
    channels_empty_streak_threshold: int = 12  # default empty pulls in a row before the alert
    channels_sync_max_pages: int = 200  # pages one sync run reads at most (the rest next run)
    channels_http_timeout_seconds: float = 10.0  # timeout of one platform API request
    channels_webhook_max_bytes: int = 2_000_000  # largest webhook body accepted

    # --- customers and file import (issue 6) ---
    # Figures of the customer profile cover orders placed within this many days.
    customers_profile_days: int = Field(default=90, ge=1, le=3650)
    # "Returns in 30 days": orders refunded within this many days.
    customers_returns_days: int = Field(default=30, ge=1, le=3650)
    # How many favourite categories the profile keeps.
    customers_favourite_categories: int = Field(default=3, ge=1, le=20)
    # Risk flag: an order whose discount exceeds this share of its subtotal (0.8 = 80%).
    customers_discount_flag_ratio: float = Field(default=0.8, gt=0, le=1)
    # Risk flag: more than this many orders of the same SKU by one buyer within the window.
    customers_burst_max_orders: int = Field(default=3, ge=1)
    customers_burst_window_seconds: int = Field(default=300, ge=1)
    # Whether a risk flag's exception case holds the order (blocking) or only informs.
    customers_flags_blocking: bool = False
    # Order review (审单, issue 17): "pass_all" passes every paid order at once (no review);
    # "auto" applies the auto-review strategy below at payment and holds the rest for review.
    orders_review_strategy: Literal["pass_all", "auto"] = "pass_all"
    orders_review_window: str = ""  # "HH:MM-HH:MM" local time when auto-review passes; "" = always
    orders_review_min_paid_minutes: int = Field(default=0, ge=0, le=10_080)
    orders_review_max_lines: int = Field(default=0, ge=0)  # 0 = any
    orders_review_max_quantity: int = Field(default=0, ge=0)  # 0 = any
    orders_review_excluded_skus: list[str] = Field(default_factory=list)
    # Profiles the ageing job recomputes per run (orders leaving the 90-day window).
    customers_ageing_batch: int = Field(default=500, ge=1, le=100_000)
    # File import: orders per ingest call (one transaction each; the progress bar moves per call).
    import_chunk_orders: int = Field(default=1000, ge=1, le=100_000)
    # XLSX exports: "auto" writes the package itself, the sheet rendered by PostgreSQL when it
    # can (ADR 0041); "rust" goes through the Rust binding (rvgsrust-xlsxwriter, where it is
    # installed: wheels for three platforms only; XlsxWriter otherwise); "python" always uses
    # XlsxWriter. All write the same cells, formats and properties (ADR 0036, 0041).
    export_xlsx_writer: Literal["auto", "rust", "python"] = "auto"

    doctor_outbox_max_backlog: int = 10_000
    doctor_outbox_max_age_seconds: int = 300
    doctor_stuck_grace_seconds: int = 300
    doctor_payment_inbox_max_age_seconds: int = 300
    # Raw platform bodies in the inboxes (channel webhooks, payment notifications) are kept
    # encrypted, then emptied this many days after they were applied (ADR 0030).
    inbox_retention_days: int = Field(default=30, ge=1, le=3650)
    # The outbox is also the event log read models are rebuilt from (`analytics rebuild`):
    # delivered events are deleted this many days after delivery (0: kept for ever), so a
    # rebuild reaches back this far. Consumers' dedupe rows and job runs go after a week.
    outbox_retention_days: int = Field(default=180, ge=0, le=36500)
    dedupe_retention_days: int = Field(default=7, ge=1, le=3650)
    job_run_retention_days: int = Field(default=7, ge=1, le=3650)

    # --- the HTTP edge (issue 14): rate limits, read timeouts, deadline, docs, metrics ---
    # Limits in the `limits` notation ("100/second;5000/minute"); callbacks are never limited.
    rate_limit_enabled: bool = True
    # Requests per API key (keyed by a hash of the presented key, valid or not).
    rate_limit_per_key: str = "1000/second;30000/minute"
    # Requests per client address (all keys together, and requests without a key).
    rate_limit_per_ip: str = "2000/second;60000/minute"
    # Failed authentications (401) per client address; past it every request of that address
    # is answered 429 until the window passes.
    rate_limit_auth_failures: str = "10/minute;50/hour"
    # Shared limit store for several processes/hosts: redis://host:6379/0; empty = in memory.
    redis_url: str = ""
    # Callbacks are stored and acknowledged at once; their apply rate is limited instead: at
    # most this many stored callbacks (payment notifications, channel webhooks) applied per
    # second by each worker process, the rest waiting in the outbox. 0 = no limit.
    callback_apply_per_second: float = Field(default=0.0, ge=0)
    # A client must send the request line and headers within this many seconds of connecting
    # (or of starting the next request on a kept-alive connection), and the whole body within
    # the body timeout after its headers; otherwise the connection is closed.
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # uvicorn's HTTP parser: "auto" = httptools where installed, else h11 (both with the
    # header and body timeouts above).
    http_implementation: Literal["auto", "httptools", "h11"] = "auto"
    # Outbound calls (providers, carrier, SMS, webhooks; core/outbound.py): the connection
    # pool under httpx, "aiohttp" (its C parser: a fraction of the CPU per call) or "httpcore"
    # (httpx's own pool, as before ADR 0054).
    outbound_http_pool: Literal["aiohttp", "httpcore"] = "aiohttp"
    body_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    # A request not answered within this many seconds gets a 503 with Retry-After (the work
    # is cancelled and rolled back); 0 = no deadline.
    request_deadline_seconds: float = Field(default=30.0, ge=0, le=3600)
    request_deadline_retry_after_seconds: int = Field(default=5, ge=1, le=3600)
    # /docs and /redoc (assets served locally): None = on in embedded mode (SQLite), off otherwise.
    docs_enabled: bool | None = None
    # When set, /metrics wants `Authorization: Bearer <token>`; empty = open (embedded/dev).
    metrics_token: str = ""

    @field_validator("base_currency")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("broker_url")
    @classmethod
    def _broker_scheme(cls, value: str) -> str:
        value = value.strip()
        if not value:
            return value
        scheme = value.partition("://")[0].lower()
        if scheme in {"kafka", "kafka+ssl", "confluent"}:
            raise ValueError("Kafka is not supported yet: use amqp:// (RabbitMQ) or nats://")
        if scheme not in {"amqp", "amqps", "nats", "tls"}:
            raise ValueError("must start with amqp://, amqps://, nats:// or tls://")
        return value

    @property
    def effective_database_url(self) -> str:
        """The configured URL, or an SQLite file under data_dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'ordertally.db').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        return self.effective_database_url.startswith("sqlite")

    def pii_key_bytes(self) -> bytes:
        """The PII master key; in embedded mode a generated one is kept under data_dir."""
        if self.pii_key:
            key = base64.b64decode(self.pii_key)
            if len(key) != 32:
                raise ValueError("ORDERTALLY_PII_KEY must be base64 of exactly 32 bytes")
            return key
        path = self.data_dir / "pii.key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
            path.chmod(0o600)
        return base64.b64decode(path.read_text().strip())


@functools.lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()


def reset_settings() -> None:
    """Forget cached settings (tests and CLI overrides)."""
    get_settings.cache_clear()
