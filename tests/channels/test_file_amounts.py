"""Issue 15: the order file import reads each platform's postage, tax and fee columns into the
order's shipping, tax and fees, so that the stored total is what the buyer paid; an order whose
columns do not add up to the platform's own paid figure is refused row by row with the numbers,
never adjusted. Headers are the platforms' export headers (sources in fixtures/SOURCES.md)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ordertally.channels import files
from ordertally.channels.import_cli import import_file
from ordertally.core.db import Database
from ordertally.exceptions.models import ExceptionCase
from ordertally.orders.models import SalesOrder
from tests.channels.helpers import make_account

pytestmark = pytest.mark.anyio

# Pinduoduo's order export (商家后台 订单查询 → 导出), one row per order.
PDD_HEADER = [
    "商品",
    "订单号",
    "订单状态",
    "商品总价(元)",
    "邮费(元)",
    "店铺优惠折扣(元)",
    "平台优惠折扣(元)",
    "多多支付立减金额(元)",
    "上门安装费(元)",
    "送货入户费(元)",
    "送货入户并安装费(元)",
    "用户实付金额(元)",
    "商家实收金额(元)",
    "商品数量(件)",
    "收货人",
    "手机",
    "省",
    "市",
    "区",
    "街道",
    "订单成交时间",
    "支付时间",
    "商品id",
    "商品规格",
    "样式ID",
    "商家编码-SKU维度",
    "售后状态",
]


def _pdd_row(order_sn: str, total: str, paid: str, *, quantity: str = "2") -> list[str]:
    return [
        "西湖龙井 250g",
        order_sn,
        "待发货",
        total,
        "4.00",  # 邮费
        "6.00",  # 店铺优惠
        "3.00",  # 平台优惠
        "1.00",  # 多多支付立减
        "25.00",  # 上门安装费
        "0.00",
        "0.00",
        paid,
        "128.80",
        quantity,
        "王**",
        "138****1234",
        "浙江省",
        "杭州市",
        "西湖区",
        "文三路***号",
        "2026-11-20 10:00:00",
        "2026-11-20 10:00:05",
        "325817263",
        "250g",
        "1138827261",
        "TEA-LJ-250",
        "无售后或售后取消",
    ]


def _csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _report(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


async def _stored(db: Database) -> dict[str, tuple[int, int, int, int, int]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(
                SalesOrder.external_id,
                SalesOrder.subtotal_minor,
                SalesOrder.shipping_minor,
                SalesOrder.tax_minor,
                SalesOrder.fee_minor,
                SalesOrder.total_minor,
            )
        )
        return {str(r[0]): (r[1], r[2], r[3], r[4], r[5]) for r in rows.all()}


async def _cases(db: Database) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(ExceptionCase)) or 0)


async def test_a_pinduoduo_export_stores_postage_fees_and_refuses_an_order_that_does_not_add_up(
    db: Database, tmp_path: Path
) -> None:
    # Given a Pinduoduo export: one order that adds up (119.80 - 6.00 - 3.00 - 1.00 discounts +
    # 4.00 postage + 25.00 installation = 138.80) and one whose 用户实付金额 says 120.00
    await make_account(db, "pdd_shop", "pinduoduo")
    source = _csv(
        tmp_path / "pdd.csv",
        [
            PDD_HEADER,
            _pdd_row("261120-000000000000001", "119.80", "138.80"),
            _pdd_row("261120-000000000000002", "119.80", "120.00"),
        ],
    )
    # When it is imported
    summary = await import_file(db, "pdd_shop", source, errors_out=tmp_path / "bad.csv")
    # Then the first is stored with every part, its total the buyer's payment, no case opened
    assert (summary.template, summary.created, summary.rejected_rows) == ("pinduoduo", 1, 1)
    assert await _stored(db) == {"261120-000000000000001": (11980, 400, 0, 2500, 13880)}
    assert await _cases(db) == 0
    # And the second is refused on its line with the numbers and the column's name
    _, row = _report(tmp_path / "bad.csv")
    assert row[:2] == ["3", "261120-000000000000002"]
    assert row[2] == (
        "金额不符 / the amounts do not add up: 商品 goods 119.80 - 优惠 discounts 10.00 + 运费 "
        "shipping 4.00 + 税 tax 0.00 + 服务费 fees 25.00 = 138.80, but 用户实付金额(元) is 120.00"
    )


def test_a_line_amount_that_does_not_divide_keeps_the_cents_as_a_line_discount(
    tmp_path: Path,
) -> None:
    # Given a Pinduoduo row of 3 items for 100.00 (no unit price in the export)
    row = _pdd_row("261120-000000000000003", "100.00", "119.00", quantity="3")
    _, results = files.parse_file(_csv(tmp_path / "p.csv", [PDD_HEADER, row]), None, "file")
    (parsed,) = list(results)
    assert isinstance(parsed, files.ParsedOrder)
    order = parsed.order
    # Then the unit price is 33.34 and the 0.02 is a line discount: the line is still 100.00
    assert [(ln.unit_price_minor, ln.quantity, ln.discount_minor) for ln in order.lines] == [
        (3334, 3, 2)
    ]
    assert (order.discount_minor, order.fee_minor, order.total_minor) == (1000, 2500, 11900)
    assert order.platform_total_minor == 11900


def test_jd_postage_and_a_multi_row_order_refused_on_every_row(tmp_path: Path) -> None:
    # Given JD's export (items of one order repeat the order's amounts): postage on the first
    # order, and a second order whose 应付金额 misses its 5.00 discount
    header = ["订单号", "商品ID", "货号", "商品名称", "订购数量", "京东价", "订单金额"]
    header += ["应付金额", "优惠金额", "运费金额", "订单状态", "下单时间"]
    header += ["客户姓名", "客户地址", "联系电话"]
    common = [
        "等待出库",
        "2026-11-20 11:00:00",
        "周八",
        "广东深圳市福田区农园路66号",
        "13800138000",
    ]

    def jd(*cells: str) -> list[str]:
        order, item, sku, price, *amounts = cells
        return [order, item, sku, "商品", "1", price, *amounts, *common]

    path = _csv(
        tmp_path / "jd.csv",
        [
            header,
            [*jd("301", "1", "TEA-LJ-250", "59.90", "59.90", "64.90", "0.00", "5.00")],
            [*jd("302", "1", "TEA-LJ-250", "59.90", "99.80", "99.80", "5.00", "0.00")],
            [*jd("302", "2", "CUP-CER-01", "39.90", "99.80", "99.80", "5.00", "0.00")],
        ],
    )
    parser, results = files.parse_file(path, None, "file")
    items = list(results)
    good = [i for i in items if isinstance(i, files.ParsedOrder)]
    bad = [i for i in items if isinstance(i, files.Rejected)]
    # Then the first is read with its postage (59.90 + 5.00 = 64.90)
    assert parser.template.name == "jd"
    assert [(o.order.shipping_minor, o.order.fee_minor, o.order.total_minor) for o in good] == [
        (500, 0, 6490)
    ]
    # And both rows of the second are refused: the first with the numbers, the other pointing
    # at it
    assert [(b.line, b.external_id) for b in bad] == [(3, "302"), (4, "302")]
    assert bad[0].reason.endswith("= 94.80, but 应付金额 is 99.80")
    assert bad[1].reason == (
        "同一订单的其他行有错误 / another row of this order was rejected (line 3)"
    )


def test_douyin_and_taobao_paid_columns_are_checked(tmp_path: Path) -> None:
    # Douyin: 订单应付金额 is the main order's, repeated on each sub-order row
    header = ["主订单编号", "子订单编号", "选购商品", "商品数量", "商家编码", "商品金额"]
    header += ["订单应付金额", "运费", "收件人", "收件人手机号", "详细地址", "订单提交时间"]
    header += ["订单状态"]
    tail = ["张三", "13812345678", "浙江省杭州市西湖区龙井路1号", "2026/11/20 09:15:00", "待发货"]
    path = _csv(
        tmp_path / "dy.csv",
        [
            header,
            ["69201", "692011", "龙井", "2", "TEA-LJ-250", "59.90", "164.70", "5.00", *tail],
            ["69201", "692012", "茶杯", "1", "CUP-CER-01", "39.90", "164.70", "5.00", *tail],
            ["69202", "692021", "龙井", "1", "TEA-LJ-250", "59.90", "64.90", "0.00", *tail],
        ],
    )
    _, results = files.parse_file(path, None, "file")
    items = list(results)
    assert [
        (i.order.external_id, i.order.total_minor)
        for i in items
        if isinstance(i, files.ParsedOrder)
    ] == [("69201", 16470)]
    refused = [i for i in items if isinstance(i, files.Rejected)]
    assert [(r.line, r.external_id) for r in refused] == [(4, "69202")]
    assert refused[0].reason.endswith("= 59.90, but 订单应付金额 is 64.90")
    # Taobao's order report: 买家实际支付金额 that is not 货款 - 店铺优惠 + 邮费 is refused;
    # an unpaid order (which pays nothing yet) is not checked
    tb_head = ["订单编号", "买家会员名", "买家应付邮费", "店铺优惠", "买家实际支付金额"]
    receiver = ["钱十", "浙江省 杭州市 余杭区 文一西路969号", "13611112222", "2026-11-20 12:00:00"]
    orders = _csv(
        tmp_path / "orders.csv",
        [
            [*tb_head, "订单状态", "收货人姓名", "收货地址", "联系手机", "订单创建时间"],
            ["2088001", "tb1", "8.00", "10.00", "57.90", "买家已付款，等待卖家发货", *receiver],
            ["2088002", "tb2", "8.00", "10.00", "60.00", "买家已付款，等待卖家发货", *receiver],
            ["2088003", "tb3", "8.00", "0.00", "0.00", "等待买家付款", *receiver],
        ],
    )
    item_rows = [["订单编号", "标题", "价格", "购买数量", "商家编码"]]
    item_rows += [
        [n, "龙井", "59.90", "1", "TEA-LJ-250"] for n in ("2088001", "2088002", "2088003")
    ]
    items_file = _csv(tmp_path / "items.csv", item_rows)
    joined = files.join_reports(orders, items_file, tmp_path / "joined.csv")
    parser, results = files.parse_file(joined, None, "file")
    items = list(results)
    assert parser.template.name == "taobao"
    good = [
        (i.order.external_id, i.order.total_minor)
        for i in items
        if isinstance(i, files.ParsedOrder)
    ]
    assert good == [("2088001", 5790), ("2088003", 6790)]
    refused = [i for i in items if isinstance(i, files.Rejected)]
    assert [r.external_id for r in refused] == ["2088002"]
    assert refused[0].reason.endswith("= 57.90, but 买家实际支付金额 is 60.00")


async def test_the_generic_template_reads_tax_and_fees(db: Database, tmp_path: Path) -> None:
    # Given our own layout with tax, fee and the paid total (USD: tax charged on top)
    await make_account(db, "any_file", "file")
    header = "order_id,sku,quantity,unit_price,currency,status,placed_at,buyer_phone,shipping,"
    header += "tax,fee,paid_total\n"
    row = "G-1,TEA-LJ-250,1,44.95,CNY,paid,2026-11-20 08:00:00,13312345678,10.00,4.50,1.00,60.45\n"
    source = tmp_path / "generic.csv"
    source.write_text(header + row, encoding="utf-8")
    # When it is imported
    summary = await import_file(db, "any_file", source, errors_out=tmp_path / "bad.csv")
    # Then every part is stored and the total is 44.95 + 10.00 + 4.50 + 1.00
    assert (summary.template, summary.created, summary.rejected_rows) == ("generic", 1, 0)
    assert await _stored(db) == {"G-1": (4495, 1000, 450, 100, 6045)}
