"""Prometheus metrics of the fulfillment domain."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

WAYBILL_REQUESTS = Counter(
    "ordertally_waybill_requests_total",
    "Waybill requests to carriers by outcome (created, unavailable, rejected)",
    ["carrier", "outcome"],
)
SUBSCRIPTIONS = Counter(
    "ordertally_tracking_subscriptions_total",
    "Tracking subscriptions by outcome (subscribed, unavailable, rejected)",
    ["carrier", "outcome"],
)
TRACKING_PUSHES = Counter(
    "ordertally_tracking_pushes_total",
    "Carrier tracking pushes by outcome (stored, duplicate, unknown_waybill, rejected)",
    ["carrier", "outcome"],
)
TRACKING_QUERIES = Counter(
    "ordertally_tracking_queries_total",
    "Active tracking queries by outcome (answered, unavailable, rejected)",
    ["carrier", "outcome"],
)
TRACKING_EVENTS = Counter(
    "ordertally_tracking_events_stored_total", "Tracking events stored (after dedupe)", ["source"]
)
TRACKING_LAG = Histogram(
    "ordertally_tracking_lag_seconds",
    "From the newest scan in a push or query to when we stored it",
    buckets=(1, 10, 60, 300, 900, 1800, 3600, 7200, 21600, 86400),
)
STALE_SHIPMENTS = Gauge(
    "ordertally_shipments_tracking_stale",
    "Shipped parcels without any tracking after the stale threshold",
)
DELIVERY_TIME = Histogram(
    "ordertally_delivery_time_seconds",
    "From shipped to delivered",
    buckets=(21600, 43200, 86400, 172800, 259200, 432000, 604800, 1209600),
)
SHIP_BATCH_SIZE = Histogram(
    "ordertally_ship_batch_size",
    "Ship requests per shipping batch (group commit, ADR 0050)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200),
)
SHIP_BATCH_ALONE = Counter(
    "ordertally_ship_batch_alone_total",
    "Ship requests of a batch that ran alone, by why (unusual: the batch left it to the "
    "one-request path; error: the batch failed)",
    ["reason"],
)
