"""`ordertally catalog import/export`: per-row validation with a report, create-or-update by
code with history, bundles from a components column, and an export that imports back."""

import csv
from pathlib import Path

import pytest
from python_calamine import CalamineWorkbook
from sqlalchemy import func, select

from ordertally.catalog import service as catalog_service
from ordertally.catalog.cli import export_file, import_file
from ordertally.catalog.models import BundleComponent, Sku, SkuChange
from ordertally.core.db import Database

pytestmark = pytest.mark.anyio

ROWS = [
    ["编码", "名称", "英文名称", "规格", "条码", "重量(g)", "类目", "品牌", "成本价", "组件"],
    [
        "IM-TEA",
        "龙井",
        "Longjing",
        "重量=250g;等级=明前",
        "6901234567892",
        "280",
        "tea",
        "狮峰",
        "88.50",
        "",
    ],
    ["IM-CUP", "茶杯", "Cup", "白色", "", "150", "", "", "", ""],
    ["IM-BAD", "坏条码", "", "", "6901234567891", "", "", "", "", ""],
    ["IM-TEA", "重复", "", "", "", "", "", "", "", ""],
    ["IM-NOCAT", "无类目", "", "", "", "", "nowhere", "", "", ""],
    ["IM-BOX", "礼盒", "Gift box", "", "", "", "", "", "", "IM-TEA*1;IM-CUP*2"],
    ["IM-NEG", "负重", "", "", "", "-3", "", "", "", ""],
]


def _write(path: Path, rows: list[list[str]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)


def _read(path: Path) -> list[list[str]]:
    return list(csv.reader(path.read_text("utf-8-sig").splitlines()))


async def test_import_stores_good_rows_and_reports_the_rest(db: Database, tmp_path: Path) -> None:
    # Given a category and a catalogue file with good and bad rows
    async with db.transaction() as session:
        await catalog_service.create_category(
            session, {"code": "tea", "name": "茶叶", "name_en": "Tea"}
        )
        before = await session.scalar(select(func.count()).select_from(Sku))
    source = tmp_path / "catalog.csv"
    _write(source, ROWS)
    # When it is imported
    summary = await import_file(db, source, None, "tester")
    # Then the good rows (and the bundle) are stored, each bad one is reported with its reason
    assert (summary["rows"], summary["created"], summary["updated"], summary["refused"]) == (
        7,
        3,
        0,
        4,
    )
    report = _read(Path(summary["report"]))
    assert [r[:2] for r in report] == [
        ["line", "code"],
        ["4", "IM-BAD"],
        ["5", "IM-TEA"],
        ["6", "IM-NOCAT"],
        ["8", "IM-NEG"],
    ]
    assert "check digit" in report[1][2] and "repeats" in report[2][2]
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(Sku)) == before + 3
        tea = await catalog_service.get_sku(session, "IM-TEA")
        assert (tea.spec, tea.spec_text, tea.cost_minor, tea.weight_g, tea.brand) == (
            {"重量": "250g", "等级": "明前"},
            "重量=250g;等级=明前",
            8850,
            280,
            "狮峰",
        )
        box = (
            await session.scalars(select(BundleComponent).order_by(BundleComponent.component))
        ).all()
        assert [(b.bundle, b.component, b.quantity) for b in box] == [
            ("IM-BOX", "IM-CUP", 2),
            ("IM-BOX", "IM-TEA", 1),
        ]

    # When the catalogue is exported to XLSX, renamed in the file and imported back
    out = tmp_path / "export.xlsx"
    written = await export_file(db, out)
    workbook = CalamineWorkbook.from_path(str(out))
    rows = [
        ["" if c is None else str(c) for c in r] for r in workbook.get_sheet_by_index(0).iter_rows()
    ]
    assert written == before + 3 and len(rows) == written + 1
    edited = [r if r[0] != "IM-CUP" else [r[0], "白瓷茶杯", *r[2:]] for r in rows]
    again = tmp_path / "again.csv"
    _write(again, edited)
    summary = await import_file(db, again, None, "tester")
    # Then only the renamed SKU changed, with a history row
    assert (summary["created"], summary["updated"], summary["refused"]) == (0, 1, 0)
    async with db.transaction(write=False) as session:
        assert (await catalog_service.get_sku(session, "IM-CUP")).name == "白瓷茶杯"
        imports = (
            await session.scalars(select(SkuChange).where(SkuChange.action == "import"))
        ).all()
        assert [(c.sku, c.changes) for c in imports] == [
            ("IM-CUP", {"name": {"from": "茶杯", "to": "白瓷茶杯"}})
        ]


async def test_import_takes_the_english_brand_records_words_and_announces_changes(
    db: Database, tmp_path: Path
) -> None:
    from ordertally.events.models import OutboxEvent

    async def catalog_events() -> list[dict[str, object]]:
        async with db.transaction(write=False) as session:
            rows = await session.scalars(
                select(OutboxEvent.payload)
                .where(OutboxEvent.event_type == "CatalogChanged")
                .order_by(OutboxEvent.id)
            )
            return [dict(r) for r in rows.all()]

    # Given a file with a brand in both languages
    source = tmp_path / "brands.csv"
    header = ["编码", "名称", "规格", "品牌", "英文品牌"]
    _write(source, [header, ["BR-1", "骉驫红茶 特级", "罐装", "骉驫", "Biaobiao"]])
    async with db.transaction(write=False) as session:
        _, revision = await catalog_service.word_revision(session)
    # When it is imported (a new SKU)
    await import_file(db, source, None, "tester")
    # Then the English brand is stored, the new words are appended at the next revision, and
    # no change event is published (a new SKU has no orders)
    async with db.transaction(write=False) as session:
        sku = await catalog_service.get_sku(session, "BR-1")
        _, now = await catalog_service.word_revision(session)
        words = await catalog_service.words_between(session, revision, now)
    assert (sku.brand, sku.brand_en) == ("骉驫", "Biaobiao")
    assert now == revision + 1
    assert sorted(words) == sorted(["骉驫红茶", "特级", "罐装", "骉驫"])
    assert await catalog_events() == []
    # When the file changes the brand and the price of the same code
    _write(source, [header, ["BR-1", "骉驫红茶 特级", "罐装", "骉驫", "Biao Tea"]])
    await import_file(db, source, None, "tester")
    # Then one CatalogChanged names it, and no word was added (none is new)
    assert await catalog_events() == [{"skus": ["BR-1"], "categories": []}]
    async with db.transaction(write=False) as session:
        assert (await catalog_service.word_revision(session))[1] == now
