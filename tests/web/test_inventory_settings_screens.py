"""The inventory and settings screens issue 20 still lacked, over HTTP (both databases): the
reservations list, the allocation dry run, the SLA policies (edited by whom may manage cases,
refused without the token or with bad minutes, changing nothing) and the carriers."""

from __future__ import annotations

import html
import re

import pytest

from ordertally.core.db import Database
from ordertally.exceptions import service as exceptions_service
from tests.factories import make_order
from tests.fulfillment.helpers import SECOND_SKU, SECOND_WAREHOUSE, split_paid_order
from tests.web.conftest import SignedInClient
from tests.web.helpers import csrf_of

pytestmark = pytest.mark.anyio


async def test_reservations_list_held_and_committed_units_with_their_orders(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an unpaid order (units held) and a paid one split over two warehouses (committed)
    unpaid = await make_order(db, "pending_payment")
    paid = await split_paid_order(db)
    warehouse = await signed_in("warehouse")
    # When the warehouse opens the reservations, held first, then committed
    held = await warehouse.get("/ui/inventory/reservations")
    committed = await warehouse.get("/ui/inventory/reservations?state=committed")
    # Then each lists its orders' units
    assert held.status_code == 200 and committed.status_code == 200
    assert set(re.findall(r'data-order="([^"]+)"', held.text)) == {unpaid.order_no}
    assert set(re.findall(r'data-order="([^"]+)"', committed.text)) == {paid.order_no}
    assert re.findall(r'data-state="(\w+)"', committed.text) == ["committed", "committed"]
    assert f"<td>{SECOND_WAREHOUSE}</td>" in committed.text
    # And a SKU filter narrows it
    narrowed = await warehouse.get(f"/ui/inventory/reservations?state=committed&sku={SECOND_SKU}")
    assert re.findall(r'data-state="(\w+)"', narrowed.text) == ["committed"]


async def test_the_allocation_dry_run_explains_the_choice_and_reserves_nothing(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given the two warehouses of a split order, and ops
    order = await split_paid_order(db)
    ops = await signed_in("ops")
    before = await ops.get("/ui/inventory/reservations?state=held")
    # When ops opens the order: its routing explanation names both warehouses, and its link
    # dry-runs the same lines to the same province again
    detail = await ops.get(f"/ui/orders/{order.order_no}")
    assert set(re.findall(r'data-routing="([^"]+)"', detail.text)) == {"WH-TEST", SECOND_WAREHOUSE}
    link = re.search(
        r'href="(/ui/inventory/allocation\?[^"]+)"[^>]*data-link="dry-run"', detail.text
    )
    assert link is not None
    again = await ops.get(html.unescape(link.group(1)))
    assert again.status_code == 200 and "TEA-LJ-250 2" in again.text and "上海市" in again.text
    # When ops dry-runs an order of two SKUs held in different warehouses
    lines = f"TEA-LJ-250 1\n{SECOND_SKU} × 1"
    page = await ops.get("/ui/inventory/allocation", params={"province": "广东省", "lines": lines})
    # Then the page says it ships from both, with the ranked candidates
    assert page.status_code == 200 and 'data-feasible="yes"' in page.text
    assert len(re.findall(r'data-chosen="([^"]+)"', page.text)) == 2
    assert f'data-candidate="{SECOND_WAREHOUSE}"' in page.text
    # And nothing was reserved
    after = await ops.get("/ui/inventory/reservations?state=held")
    assert re.findall(r"data-reservation=", after.text) == re.findall(
        r"data-reservation=", before.text
    )
    # When the lines are malformed or the stock too short
    bad = await ops.get("/ui/inventory/allocation", params={"province": "", "lines": "?? -3"})
    short = await ops.get(
        "/ui/inventory/allocation", params={"province": "上海市", "lines": "TEA-LJ-250 999999"}
    )
    # Then it says so
    assert bad.status_code == 422 and "data-dry-run-error" in bad.text
    assert 'data-feasible="no"' in short.text and "data-shortfall" in short.text


async def test_ops_edits_an_sla_policy_and_bad_input_changes_nothing(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given ops on the SLA policies
    ops = await signed_in("ops")
    listed = await ops.get("/ui/settings/sla")
    assert listed.status_code == 200 and 'data-edit-policy="amount_mismatch"' in listed.text
    assert "data-policy-form" not in listed.text  # one row is edited at a time
    page = await ops.get("/ui/settings/sla?edit=amount_mismatch")
    assert re.findall(r'data-policy-form="([^"]+)"', page.text) == ["amount_mismatch"]
    token = csrf_of(page.text)
    form = {"sla_minutes": "90", "warn_minutes": "15", "severity": "critical", "owner_role": "cs"}
    # When ops posts minutes out of range, an unknown type, and no token
    wrong = await ops.post(
        "/ui/settings/sla/amount_mismatch", data={**form, "sla_minutes": "0", "csrf_token": token}
    )
    unknown = await ops.post("/ui/settings/sla/no_such_type", data={**form, "csrf_token": token})
    forged = await ops.post("/ui/settings/sla/amount_mismatch", data=form)
    # Then each is refused and the policy is unchanged
    assert wrong.status_code == 422 and 'data-sla-error="amount_mismatch"' in wrong.text
    assert unknown.status_code == 404
    assert forged.status_code == 403
    async with db.transaction(write=False) as session:
        policy = await exceptions_service.policy_of(session, "amount_mismatch")
    assert (policy.sla_minutes, policy.severity, policy.owner_role) == (240, "high", "finance")
    # When ops saves the edit
    saved = await ops.post("/ui/settings/sla/amount_mismatch", data={**form, "csrf_token": token})
    # Then cases opened from now on follow it, the rest of the policy kept
    assert saved.status_code == 303
    async with db.transaction(write=False) as session:
        policy = await exceptions_service.policy_of(session, "amount_mismatch")
    assert (policy.sla_minutes, policy.warn_minutes, policy.severity, policy.owner_role) == (
        90,
        15,
        "critical",
        "cs",
    )
    assert policy.escalate_to == "admin" and policy.notify_on_open is True


async def test_roles_on_the_sla_policies_and_carriers(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given cs and the warehouse, who may read cases but not manage them
    cs = await signed_in("cs")
    page = await cs.get("/ui/settings/sla?edit=amount_mismatch")
    # Then cs sees the policies without a form or an edit link, and is refused a post
    assert page.status_code == 200 and "data-policy-form" not in page.text
    assert "data-edit-policy" not in page.text
    assert '<td class="num" data-sla>240</td>' in page.text
    refused = await cs.post(
        "/ui/settings/sla/amount_mismatch",
        data={"csrf_token": csrf_of(page.text), "sla_minutes": "5", "warn_minutes": "1",
              "severity": "low", "owner_role": "cs"},
    )  # fmt: skip
    assert refused.status_code == 403
    # And the carriers page is for whom may manage fulfillment: refused to cs, shown to ops
    assert (await cs.get("/ui/settings/carriers")).status_code == 403
    ops = await signed_in("ops")
    carriers = await ops.get("/ui/settings/carriers")
    assert carriers.status_code == 200 and 'data-carrier="adapter"' in carriers.text
    assert 'data-company="*"' in carriers.text
