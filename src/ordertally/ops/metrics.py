"""Prometheus metrics: HTTP latency middleware and database-derived gauges read at scrape time."""

from __future__ import annotations

import asyncio
import hmac
import os
import time
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.edge import bearer_token
from ordertally.events import repository as events_repository
from ordertally.exceptions import repository as exceptions_repository
from ordertally.exceptions.metrics import CASES_OPEN
from ordertally.inventory import repository as inventory_repository
from ordertally.search import service as search_service

disable_created_metrics()

HTTP_LATENCY = Histogram(
    "ordertally_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
LOOP_LAG = Histogram(
    "ordertally_event_loop_lag_seconds",
    "How late the process's event loop woke a sampler asleep for 0.1 s (time callbacks waited)",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
OUTBOX_BACKLOG = Gauge(
    "ordertally_outbox_backlog", "Outbox events not yet delivered", multiprocess_mode="max"
)
OUTBOX_OLDEST_AGE = Gauge(
    "ordertally_outbox_oldest_age_seconds",
    "Age of the oldest undelivered outbox event",
    multiprocess_mode="max",
)

RESERVATIONS = Gauge(
    "ordertally_reservations", "Reservations by state", ["state"], multiprocess_mode="max"
)
SWEEP_LAG = Gauge(
    "ordertally_reservation_sweep_lag_seconds",
    "How long the oldest expired reservation has been waiting for the sweep",
    multiprocess_mode="max",
)


async def sample_loop_lag(stop: asyncio.Event, every: float = 0.1) -> None:
    """Until `stop`, sleep `every` seconds and observe how much later than that the loop woke
    this task: what any callback ready at that moment waited (ten wake-ups a second)."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        asleep = loop.time()
        await asyncio.sleep(every)
        LOOP_LAG.observe(max(0.0, loop.time() - asleep - every))


class LatencyMiddleware:
    """Observe each request's duration labelled by its route template (not its raw path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            HTTP_LATENCY.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - start
            )


async def refresh_gauges(db: Database) -> dict[str, Any]:
    """Read the outbox backlog from the database into the gauges."""
    async with db.transaction(write=False) as session:
        backlog, oldest = await events_repository.backlog(session)
        states = await inventory_repository.reservation_state_counts(session)
        expired = await inventory_repository.oldest_expired_held(session, clock.now())
        cases = await exceptions_repository.counts_by_type_state(session)
        await search_service.pending_lag(session)  # sets the search index lag gauge
    CASES_OPEN.clear()
    for (case_type, state), n in cases.items():
        CASES_OPEN.labels(case_type, state).set(n)
    for state in ("held", "committed", "consumed", "released"):
        RESERVATIONS.labels(state).set(states.get(state, 0))
    SWEEP_LAG.set((clock.now() - clock.as_utc(expired)).total_seconds() if expired else 0.0)
    age = (clock.now() - clock.as_utc(oldest)).total_seconds() if oldest else 0.0
    OUTBOX_BACKLOG.set(backlog)
    OUTBOX_OLDEST_AGE.set(max(age, 0.0))
    return {"backlog": backlog, "oldest_age_seconds": age}


def scrape_allowed(token: str, authorization: str | None) -> bool:
    """Whether a scrape may read the metrics: always, unless a metrics token is configured."""
    if not token:
        return True
    presented = bearer_token(authorization) or ""
    return hmac.compare_digest(presented.encode(), token.encode())


def render() -> tuple[bytes, str]:
    """The exposition text; aggregates all processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
