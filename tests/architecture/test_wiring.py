"""Explicit wiring: importing the app, the CLI or the worker registers nothing; the one list of
domains wires every job, consumer and hook, the same for the app and the worker; the app
mounts each domain's routes once."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import httpx
import pytest

from ordertally.app import create_app
from ordertally.core.settings import get_settings
from ordertally.domains import register_all
from ordertally.jobs import scheduler

# Run in a fresh interpreter: the registries are process-wide and the test process has
# imported most modules already.
PROBE = """
import json
import ordertally.app, ordertally.cli, ordertally.jobs.worker
from ordertally.core.settings import get_settings
from ordertally.domains import register_all
from ordertally.events.registry import CONSUMERS, PUBLISH_HOOKS
from ordertally.jobs.lanes import LANES
from ordertally.jobs.scheduler import JOBS
from ordertally.orders import api, closing, snapshot

def state():
    hooks = snapshot.SNAPSHOT_PARTS + closing.PRE_CLOSE_CHECKS + api.DOCUMENT_PARTS
    return {
        "jobs": sorted(JOBS),
        "consumers": sorted(CONSUMERS),
        "hooks": [f"{h.__module__}.{h.__qualname__}" for h in hooks],
        "publish_hooks": sorted(PUBLISH_HOOKS),
        "lanes": sorted(LANES),
    }

imported = state()
register_all(get_settings())
wired = state()
register_all(get_settings())  # the app and the worker of one process both wire
print(json.dumps({"imported": imported, "wired": wired, "again": state()}))
"""

JOBS = [
    "aftersales_confirm_receipts",
    "aftersales_gauges",
    "aftersales_record_purge",
    "aftersales_record_retry",
    "aftersales_refund_pull",
    "aftersales_refunds",
    "aftersales_sla",
    "case_counts_fold",
    "casework_batches",
    "casework_sla",
    "channels_file_imports",
    "channels_sync_due",
    "channels_webhook_purge",
    "channels_webhook_sweep",
    "close_unpaid_orders",
    "customers_age_profiles",
    "exports_expire",
    "exports_run_queued",
    "fulfillment_allocate_waiting",
    "fulfillment_carrier_work",
    "fulfillment_flag_stale",
    "machinery_purge",
    "notify_send_due",
    "orders_review_recheck",
    "payments_inbox_gauges",
    "payments_inbox_purge",
    "payments_purge_nonces",
    "payments_query_due",
    "purge_idempotency_keys",
    "purge_order_fingerprints",
    "purge_user_sessions",
    "rules_schedule_tick",
    "search_catalog_words",
    "sweep_expired_reservations",
]
CONSUMERS = [
    "analytics.aftersale_timeline",
    "analytics.delay_causes",
    "analytics.order_daily_tally",
    "analytics.order_timeline",
    "channels.apply_webhook",
    "customers.count_return",
    "customers.link_channel_buyer",
    "customers.link_order",
    "fulfillment.allocate",
    "notify.plan",
    "payments.apply_notification",
    "rules.evaluate",
    "search.catalog_changed",
    "search.reindex",
]
PUBLISH_HOOKS = ["search.dirty"]
LANES = ["search"]
HOOKS = [
    "ordertally.fulfillment.api.order_shipments",
    "ordertally.casework.service.order_cases",
    "ordertally.payments.compensation.keep_open_if_paid",
    "ordertally.fulfillment.tracking_page.order_part",
]


def test_imports_register_nothing_and_the_domain_list_wires_everything_once() -> None:
    # Given a fresh interpreter that imports the app, the CLI and the worker
    # When it wires the domains, twice
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # Then the imports registered nothing
    assert result["imported"] == {
        "jobs": [],
        "consumers": [],
        "hooks": [],
        "publish_hooks": [],
        "lanes": [],
    }
    # and the wiring registered every job, consumer, hook and lane, each once
    assert result["wired"] == {
        "jobs": JOBS,
        "consumers": CONSUMERS,
        "hooks": HOOKS,
        "publish_hooks": PUBLISH_HOOKS,
        "lanes": LANES,
    }
    assert result["again"] == result["wired"]


def test_the_app_mounts_every_domain_once() -> None:
    # Given the app
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = create_app(get_settings())
        # When its API document is built
        operations = [
            (method.upper(), path)
            for path, item in app.openapi()["paths"].items()
            for method in item
        ]
    # Then no operation is mounted twice (FastAPI warns of a duplicate operation id)
    assert [str(w.message) for w in caught if "Duplicate Operation ID" in str(w.message)] == []
    # and each domain's routes are there
    for operation in [
        ("POST", "/api/v1/orders"),
        ("POST", "/callbacks/wechatpay"),
        ("POST", "/api/v1/orders/{order_no}/payments"),
        ("POST", "/api/v1/stock/movements"),
        ("GET", "/api/v1/shipments"),
        ("POST", "/callbacks/channels/shopify/{account}"),
        ("GET", "/api/v1/customers/{customer_id}"),
        ("GET", "/api/v1/notifications"),
        ("GET", "/healthz"),
    ]:
        assert operation in operations, operation


@pytest.mark.anyio
async def test_the_app_serves_the_tracking_page_outside_the_api_document() -> None:
    # Given the app / When a forged tracking link's QR code is asked for
    transport = httpx.ASGITransport(app=create_app(get_settings()))
    async with httpx.AsyncClient(transport=transport, base_url="http://ordertally.test") as c:
        response = await c.get("/t/not-a-token/qr.svg")
    # Then fulfillment's tracking route answers, refusing the link
    assert (response.status_code, response.json()["code"]) == (
        404,
        "fulfillment.tracking_link_invalid",
    )


@pytest.mark.anyio
async def test_plugin_modules_are_wired_after_the_domains() -> None:
    # Given settings naming a plugin module
    settings = get_settings().model_copy(
        update={"plugin_modules": ["tests.architecture.sample_plugin"]}
    )
    try:
        # When the app and a worker wire the domains
        app = create_app(settings)
        register_all(settings)
        from tests.architecture import sample_plugin

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ordertally.test") as c:
            response = await c.get("/plugin/ping")
        # Then its job is registered, its register() ran for both, and its route answers
        assert "test.plugin_job" in scheduler.JOBS
        assert sample_plugin.REGISTERED == [True, False]
        assert (response.status_code, response.json()) == (200, {"plugin": "pong"})
    finally:
        scheduler.JOBS.pop("test.plugin_job", None)
