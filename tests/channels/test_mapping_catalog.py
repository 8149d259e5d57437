"""Issue 22: a platform SKU mapping points at an existing, active catalogue SKU (refused with the
catalogue's problem codes otherwise, changing nothing), and a channel order for a bundle reserves
its components: Shopify's published order (SDK fixture, see fixtures/SOURCES.md) sent as a
signed webhook over real HTTP, one line mapped to a bundle."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import select

from ordertally.catalog import service as catalog_service
from ordertally.channels import consumers  # noqa: F401  (registers the consumer)
from ordertally.core.db import Database
from ordertally.core.settings import get_settings, reset_settings
from ordertally.events.dispatcher import drain
from ordertally.inventory.models import Reservation
from ordertally.orders.models import SalesOrder
from tests.channels.test_amounts import _account, _send, consistent_order
from tests.factories import add_bundle, auth

pytestmark = pytest.mark.anyio

MAPPINGS = "/api/v1/channels/sku-mappings"


async def test_a_mapping_must_name_an_active_catalogue_sku(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    admin = auth(keys["admin"])
    async with db.transaction() as session:
        await catalog_service.deactivate_sku(session, "CUP-CER-01", "tests")
    # When a mapping names a code the catalogue does not know, or one no longer sold
    unknown = await client.post(
        MAPPINGS,
        json={"platform": "pinduoduo", "platform_sku": "PDD-1", "sku": "NOT-OURS-1"},
        headers=admin,
    )
    inactive = await client.post(
        MAPPINGS,
        json={"platform": "pinduoduo", "platform_sku": "PDD-1", "sku": "CUP-CER-01"},
        headers=admin,
    )
    # Then both are refused with the catalogue's problem codes, and nothing is stored
    assert (unknown.status_code, unknown.json()["code"]) == (422, "catalog.unknown_sku")
    assert (inactive.status_code, inactive.json()["code"]) == (422, "catalog.inactive_sku")
    assert (await client.get(MAPPINGS, headers=admin)).json()["items"] == []
    # And remapping a good mapping to an unknown code is refused and leaves it as it was
    good = await client.post(
        MAPPINGS,
        json={"platform": "pinduoduo", "platform_sku": "PDD-1", "sku": "TEA-LJ-250"},
        headers=admin,
    )
    assert good.status_code == 201, good.text
    remap = await client.patch(
        f"{MAPPINGS}/{good.json()['id']}", json={"sku": "NOT-OURS-1"}, headers=admin
    )
    assert (remap.status_code, remap.json()["code"]) == (422, "catalog.unknown_sku")
    kept = await client.get(f"{MAPPINGS}/{good.json()['id']}", headers=admin)
    assert kept.json()["sku"] == "TEA-LJ-250"


async def test_a_shopify_order_for_a_bundle_reserves_its_components(
    db: Database,
    live_server: Any,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a gift box of one tea and two cups, and the shop's two SKUs mapped: the first to
    # the box, the second to the tea itself
    monkeypatch.setenv("ORDERTALLY_FX_RATES", '{"USD": "7.1043"}')
    reset_settings()
    await add_bundle(db, "GIFT-BOX", {"TEA-LJ-250": 1, "CUP-CER-01": 2})
    http = await _account(live_server, keys)
    doc = consistent_order()
    for platform_sku, sku in zip(
        [line["sku"] for line in doc["line_items"]], ["GIFT-BOX", "TEA-LJ-250"], strict=True
    ):
        mapped = await http.post(
            MAPPINGS,
            json={"platform": "shopify", "platform_sku": platform_sku, "sku": sku},
            headers=auth(keys["admin"]),
        )
        assert mapped.status_code == 201, mapped.text
    # When Shopify delivers the order, signed, and the worker applies it
    await _send(http, doc, "wh-bundle")
    await drain(db, get_settings())
    # Then the order's box line reserved its components, none of the box itself
    async with db.transaction(write=False) as session:
        order = await session.scalar(
            select(SalesOrder).where(SalesOrder.external_id == str(doc["id"]))
        )
        assert order is not None
        rows = (
            await session.execute(
                select(Reservation.sku, Reservation.quantity).where(
                    Reservation.order_id == order.id
                )
            )
        ).all()
    reserved: dict[str, int] = {}
    for sku, quantity in rows:
        reserved[sku] = reserved.get(sku, 0) + quantity
    assert reserved == {"TEA-LJ-250": 2, "CUP-CER-01": 2}
    response = await http.get(f"/api/v1/orders/{order.order_no}", headers=auth(keys["admin"]))
    assert [line["sku"] for line in response.json()["lines"]] == ["GIFT-BOX", "TEA-LJ-250"]
    await http.aclose()
