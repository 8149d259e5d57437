"""Platform order files without a database: templates, encodings, XLSX, per-row validation with
line numbers, grouping of lines into orders, time zones and the formula-safe error report."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
import xlsxwriter

from ordertally.channels import files
from ordertally.channels.canonical import PlatformStatus

FIXTURES = Path(__file__).parent / "fixtures"

GENERIC = [
    "order_id",
    "sku",
    "quantity",
    "unit_price",
    "currency",
    "status",
    "placed_at",
    "buyer_name",
    "buyer_phone",
    "address",
]


def row(order: str, sku: str = "A", qty: str = "1", price: str = "10.00", **kw: str) -> list[str]:
    values = {
        "currency": "CNY",
        "status": "paid",
        "placed_at": "2026-11-20 07:59:59",
        "buyer_name": "张三",
        "buyer_phone": "13812345678",
        "address": "上海市浦东新区世纪大道1号",
        **kw,
    }
    return [order, sku, qty, price] + [values[k] for k in GENERIC[4:]]


def write_csv(
    path: Path, rows: list[list[str]], encoding: str = "utf-8", bom: bool = False
) -> Path:
    with path.open("w", encoding=encoding, newline="") as f:
        if bom:
            f.write("\ufeff")
        csv.writer(f).writerows(rows)
    return path


def parse(
    path: files.Source, template: str | None = None, platform: str = "file"
) -> tuple[files.FileParser, list[files.ParsedOrder], list[files.Rejected]]:
    parser, results = files.parse_file(
        path, files.template_for(template) if template else None, platform
    )
    items = list(results)
    good = [i for i in items if isinstance(i, files.ParsedOrder)]
    bad = sorted((i for i in items if isinstance(i, files.Rejected)), key=lambda r: r.line)
    return parser, good, bad


@pytest.mark.parametrize(
    ("encoding", "bom"), [("utf-8", False), ("utf-8", True), ("gb18030", False), ("utf-16", False)]
)
def test_every_encoding_reads_the_same(tmp_path: Path, encoding: str, bom: bool) -> None:
    path = write_csv(
        tmp_path / "o.csv",
        [GENERIC, row("订单-1", buyer_name="欧阳娜娜"), row("订单-2")],
        encoding,
        bom,
    )
    parser, good, bad = parse(path)
    assert parser.template.name == "generic" and bad == []
    assert [(o.order.external_id, o.order.buyer_name, o.lines) for o in good] == [
        ("订单-1", "欧阳娜娜", (2,)),
        ("订单-2", "张三", (3,)),
    ]


def test_text_that_is_not_utf8_nor_gb18030_is_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "o.csv"
    path.write_bytes(b"order_id,sku\n\x81\x30\xff\xff,A\n")
    with pytest.raises(files.FileError, match="UTF-8"):
        parse(path)


def test_each_bad_row_is_reported_with_its_line_and_sinks_its_order(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "o.csv",
        [
            GENERIC,
            row("G1"),  # line 2: good
            row("", sku="B"),  # 3: missing order id
            row("G2", price="1O.00"),  # 4: bad amount
            row("G3", placed_at="2026-02-30 10:00:00"),  # 5: bad date
            row("G4", status="shipped-ish"),  # 6: unknown status
            row("G5", qty="0"),  # 7: quantity ≤ 0
            row("G5", qty="2"),  # 8: same order, good row, sunk with it
            row("G6", currency="CNY"),  # 9: mixed currency...
            row("G6", currency="USD"),  # 10: ...within one order
            row("G7", price="-1.00"),  # 11: negative amount
            row("G8", qty="1.5"),  # 12: fractional quantity
            row("G9", price="1.001"),  # 13: more decimals than CNY has
            [],  # 14: blank lines are skipped
            row("G10", buyer_phone=""),  # 15: no phone
            row("G11", sku=""),  # 16: no SKU
            row("G12"),  # 17: good
        ],
    )
    parser, good, bad = parse(path)
    assert [o.order.external_id for o in good] == ["G1", "G12"]
    assert [(r.line, r.external_id, r.reason.split(" / ")[0]) for r in bad] == [
        (3, "", "缺少订单号"),
        (4, "G2", "金额无效"),
        (5, "G3", "日期无效"),
        (6, "G4", "未知订单状态"),
        (7, "G5", "数量必须大于 0"),
        (8, "G5", "同一订单的其他行有错误"),
        (9, "G6", "同一订单币种不一致"),
        (10, "G6", "同一订单币种不一致"),
        (11, "G7", "金额无效"),
        (12, "G8", "数量无效"),
        (13, "G9", "金额无效"),
        (15, "G10", "缺少手机号"),
        (16, "G11", "缺少商品编码"),
    ]
    assert bad[5].reason.endswith("(line 7)")
    assert (parser.stats.rows, parser.stats.orders, parser.stats.rejected_rows) == (15, 2, 13)


def test_lines_group_into_orders_and_scattered_rows_are_refused(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "o.csv",
        [GENERIC, row("A1", sku="A"), row("A1", sku="B", qty="3"), row("B1"), row("A1", sku="C")],
    )
    _, good, bad = parse(path)
    assert [
        (o.order.external_id, [(ln.platform_sku, ln.quantity) for ln in o.order.lines])
        for o in good
    ] == [
        ("A1", [("A", 1), ("B", 3)]),
        ("B1", [("A", 1)]),
    ]
    assert [(r.line, r.external_id) for r in bad] == [(5, "A1")]
    assert "first on line 2" in bad[0].reason


def test_local_times_become_utc_across_the_day_boundary(tmp_path: Path) -> None:
    # 00:30 on 21 November in Beijing is 16:30 on 20 November in UTC; an explicit offset wins
    path = write_csv(
        tmp_path / "o.csv",
        [
            GENERIC,
            row("T1", placed_at="2026/11/21 00:30:00"),
            row("T2", placed_at="2026-11-21T00:30:00+00:00"),
            row("T3", placed_at="2026年11月21日 00:30:00"),
        ],
    )
    _, good, _ = parse(path)
    assert [o.order.placed_at for o in good] == [
        datetime(2026, 11, 20, 16, 30, tzinfo=UTC),
        datetime(2026, 11, 21, 0, 30, tzinfo=UTC),
        datetime(2026, 11, 20, 16, 30, tzinfo=UTC),
    ]
    assert all(o.order.placed_at.tzinfo is not None for o in good)


def test_an_xlsx_export_with_real_dates_and_numbers(tmp_path: Path) -> None:
    # Given a Douyin export saved by Excel: numbers as numbers, dates as date cells, ids as text
    path = tmp_path / "抖店.xlsx"
    workbook = xlsxwriter.Workbook(str(path))
    sheet = workbook.add_worksheet()
    stamp = workbook.add_format({"num_format": "yyyy-mm-dd hh:mm:ss"})
    header = ["主订单编号", "商品数量", "商家编码", "商品单价", "订单状态", "订单提交时间"]
    header += ["收件人", "收件人手机号", "省", "市", "区", "详细地址"]
    sheet.write_row(0, 0, header)
    sheet.write_string(1, 0, "6920000000000001234")  # beyond float precision: kept as text
    sheet.write_number(1, 1, 2)
    sheet.write_string(1, 2, "TEA-LJ-250")
    sheet.write_number(1, 3, 59.9)
    sheet.write_string(1, 4, "备货中")
    sheet.write_datetime(1, 5, datetime(2026, 11, 21, 0, 30), stamp)
    sheet.write_row(1, 6, ["张三", "138****5678", "浙江省", "杭州市", "西湖区", "龙井路1号"])
    sheet.write_row(2, 0, ["6920000000000009999", "x", "TEA-LJ-250", "59.90", "待发货"])
    workbook.close()
    parser, good, bad = parse(path)
    # Then the template is recognised and values are exact
    assert parser.template.name == "douyin" and parser.total_rows == 2
    order = good[0].order
    assert (order.platform, order.external_id, order.status) == (
        "douyin",
        "6920000000000001234",
        PlatformStatus.PAID,
    )
    assert (order.lines[0].quantity, order.lines[0].unit_price_minor) == (2, 5990)
    assert order.placed_at == datetime(2026, 11, 20, 16, 30, tzinfo=UTC)
    assert order.buyer_phone == "138****5678"
    assert [(r.line, r.reason.split(" / ")[0]) for r in bad] == [(3, "数量无效")]
    # And the same workbook held in memory (an upload decrypted for import) reads alike
    in_memory = files.InMemoryFile(path.name, path.read_bytes())
    parser_m, good_m, bad_m = parse(in_memory)
    assert parser_m.total_rows == 2 and [g.order for g in good_m] == [g.order for g in good]
    assert [(r.line, r.reason) for r in bad_m] == [(r.line, r.reason) for r in bad]


def test_not_an_xlsx_and_unknown_layouts_are_bad_files(tmp_path: Path) -> None:
    fake = tmp_path / "o.xlsx"
    fake.write_text("order_id,sku\n")
    with pytest.raises(files.FileError, match="XLSX"):
        parse(fake)
    unknown = write_csv(tmp_path / "u.csv", [["foo", "bar"], ["1", "2"]])
    with pytest.raises(files.FileError, match="template"):
        parse(unknown)
    with pytest.raises(files.FileError, match="主订单编号"):
        parse(FIXTURES / "taobao_orders.csv", template="douyin")
    pdf = tmp_path / "o.pdf"
    pdf.write_text("x")
    with pytest.raises(files.FileError, match="unsupported"):
        parse(pdf)
    with pytest.raises(files.FileError):
        files.template_for("shopify")


def test_excel_keep_as_text_tricks_are_undone() -> None:
    assert files.text_of('="0012345"') == "0012345"
    assert files.text_of("'13812345678") == "13812345678"
    assert files.text_of("\t6920000000000001") == "6920000000000001"
    assert files.text_of(1.0) == "1" and files.text_of(None) == ""


def test_one_column_addresses_are_split() -> None:
    assert files.split_address("浙江省 杭州市 西湖区 文三路 1 号") == (
        "浙江省",
        "杭州市",
        "西湖区",
        "文三路 1 号",
    )
    assert files.split_address("广东省广州市天河区体育西路1号") == (
        "广东省",
        "广州市",
        "天河区",
        "体育西路1号",
    )
    assert files.split_address("上海市浦东新区世纪大道1号") == (
        "上海市",
        "上海市",
        "浦东新区",
        "世纪大道1号",
    )


def test_the_error_report_cannot_run_formulas(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    rejected = [
        files.Rejected(2, "=1+1", "@SUM(A1)", ("-2+3", "+cmd", "\tx", "普通", '=HYPERLINK("x")')),
    ]
    assert files.write_report(out, ["=A1", "名称"], rejected) == 1
    raw = out.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # Excel opens Chinese text right
    rows = list(csv.reader(out.read_text(encoding="utf-8-sig").splitlines()))
    assert rows[0] == ["行号 line", "订单号 order id", "原因 reason", "'=A1", "名称"]
    assert rows[1] == [
        "2",
        "'=1+1",
        "'@SUM(A1)",
        "'-2+3",
        "'+cmd",
        "'\tx",
        "普通",
        '\'=HYPERLINK("x")',
    ]


@pytest.mark.parametrize("name", ["douyin", "jd", "taobao", "generic"])
def test_each_platform_sample_is_recognised(name: str) -> None:
    parser, good, bad = parse(FIXTURES / f"{name}_orders.csv")
    assert parser.template.name == name
    assert len(good) >= 1 and len(bad) >= 1
    statuses = {o.order.status for o in good}
    assert statuses <= set(PlatformStatus)


def test_status_words_of_the_templates() -> None:
    words = {
        "待发货": "paid",
        "已关闭": "cancelled",
        "交易关闭": "cancelled",
        "已完成": "delivered",
        "交易成功": "delivered",
        "待付款": "unpaid",
        "已退款": "refunded",
    }
    for template in files.TEMPLATES.values():
        for word, status in words.items():
            assert template.statuses[word] == status, (template.name, word)
    assert files.TEMPLATES["taobao"].statuses["买家已付款，等待卖家发货"] == "paid"
    assert files.TEMPLATES["jd"].statuses["等待出库"] == "paid"
