"""Prometheus metrics of the notify domain."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

SENDS = Counter(
    "ordertally_notification_sends_total",
    "Notification send attempts by target kind and outcome (sent, retry, dead, skipped)",
    ["kind", "outcome"],
)
SEND_SECONDS = Histogram(
    "ordertally_notification_send_seconds",
    "Time one send to a channel or gateway took",
    ["kind"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
DEAD = Counter(
    "ordertally_notification_dead_total",
    "Notifications given up (dead letters), by target kind",
    ["kind"],
)
PLANNED = Counter(
    "ordertally_notifications_planned_total",
    "Notifications written to the send log by event type and target kind",
    ["event_type", "kind"],
)
