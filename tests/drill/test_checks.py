"""The drill's checks of the channel orders, on made-up outcomes: each must fail on the fault
it exists to catch (an order pulled twice or never, a wrong row turned into an order, a good
row lost, a second upload that created orders), and the Taobao export the drill uploads parses
as the platform's template into the rows it claims."""

from __future__ import annotations

from typing import Any

from bench.drill import checks
from bench.drill.scenario import taobao_export

from ordertally.channels import files

GOOD = ["2088000000000001", "2088000000000002"]
BAD = {"2088000000000003": "unknown status"}
REPORT = "订单编号,原因\n'2088000000000003,未知订单状态 / unknown status\n"


def _imports(**again: Any) -> list[dict[str, Any]]:
    first = {"upload": "first", "id": 1, "state": "done", "rows": 3, "created": 2}
    second = {"upload": "again", "id": 2, "state": "done", "rows": 3, "created": 0}
    return [
        {**first, "duplicates": 0, "rejected_rows": 1},
        {**second, "duplicates": 2, "rejected_rows": 1, **again},
    ]


def _file_check(
    imports: list[dict[str, Any]], orders: dict[str, str], report: str = REPORT
) -> bool:
    reports = {1: report, 2: report}
    return bool(checks.file_import(imports, GOOD, BAD, orders, reports)["ok"])


def test_every_row_of_the_file_is_accounted_or_the_check_fails() -> None:
    orders = {g: f"SO{n}" for n, g in enumerate(GOOD)}
    assert _file_check(_imports(), orders)
    # a good row that made no order
    assert not _file_check(_imports(), {GOOD[0]: "SO0"})
    # a wrong row that made an order
    assert not _file_check(_imports(), {**orders, "2088000000000003": "SO9"})
    # the second upload created orders again
    assert not _file_check(_imports(created=2, duplicates=0), orders)
    # a wrong row missing from the rejected report
    assert not _file_check(_imports(), orders, report="订单编号,原因\n")
    # an import that did not finish
    assert not _file_check(_imports(state="running"), orders)
    # the second upload never answered
    assert not _file_check(_imports()[:1], orders)


def test_a_pinduoduo_order_pulled_twice_or_never_fails_the_check() -> None:
    sent = {"261206-000000000000001": 1.0, "261206-000000000000002": 2.0}
    assert checks.pdd_pulled_once(sent, list(sent))["ok"]
    assert not checks.pdd_pulled_once(sent, [*sent, "261206-000000000000001"])["ok"]
    missing = checks.pdd_pulled_once(sent, ["261206-000000000000001"])
    assert not missing["ok"] and missing["detail"]["missing"] == ["261206-000000000000002"]


def test_the_drills_taobao_export_parses_into_the_rows_it_claims() -> None:
    body, good, bad = taobao_export(1, 4)
    _, results = files.parse_file(
        files.InMemoryFile("export.csv", body), files.TEMPLATES["taobao"], "taobao"
    )
    parsed = list(results)
    orders = [p.order for p in parsed if isinstance(p, files.ParsedOrder)]
    rejected = [p for p in parsed if isinstance(p, files.Rejected)]
    assert sorted(o.external_id for o in orders) == good
    assert sorted(r.external_id for r in rejected) == sorted(bad)
    # every good order is paid, for two units of the catalog's tea, from a buyer of its own
    assert {(o.status, o.lines[0].platform_sku, o.lines[0].quantity) for o in orders} == {
        ("paid", "TEA-LJ-250", 2)
    }
    assert len({o.buyer_phone for o in orders}) == len(orders)
