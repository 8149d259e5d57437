"""`ordertally import`: platform order files stored through the one ingest path, rejected rows
reported with their lines, the same file twice creates nothing, and the CLI's exit codes."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from ordertally.channels import files, service
from ordertally.channels.import_cli import ImportRefused, import_file
from ordertally.channels.schemas import AccountCreate
from ordertally.core.db import Database
from ordertally.orders.models import OrderLine, SalesOrder

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"


async def account(db: Database, code: str, platform: str) -> None:
    body: dict[str, Any] = {"code": code, "platform": platform, "name": f"{code} 店铺"}
    async with db.transaction() as session:
        await service.create_account(session, AccountCreate.model_validate(body))


async def orders(db: Database) -> list[tuple[str | None, str, int, int]]:
    async with db.transaction(write=False) as session:
        rows = await session.execute(
            select(
                SalesOrder.external_id,
                SalesOrder.status,
                SalesOrder.total_minor,
                select(func.count())
                .select_from(OrderLine)
                .where(OrderLine.order_id == SalesOrder.id)
                .scalar_subquery(),
            ).order_by(SalesOrder.external_id)
        )
        return [tuple(r) for r in rows.all()]  # type: ignore[misc]


def report_rows(path: Path) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        return list(csv.reader(f))


async def test_a_douyin_file_imports_its_good_orders_and_reports_the_bad_row(
    db: Database, tmp_path: Path
) -> None:
    # Given a Douyin account and the shop's export: 3 good orders (one of two lines), 1 bad row
    await account(db, "dy_shop", "douyin")
    source = tmp_path / "抖店订单.csv"
    shutil.copy(FIXTURES / "douyin_orders.csv", source)
    # When it is imported
    summary = await import_file(db, "dy_shop", source)
    # Then the good orders are stored once, the bad one is reported with its line
    assert (summary.template, summary.rows, summary.orders, summary.rejected_rows) == (
        "douyin",
        5,
        3,
        1,
    )
    assert (summary.created, summary.updated, summary.duplicates) == (3, 0, 0)
    assert summary.exit_code == 2
    stored = await orders(db)
    assert [o[0] for o in stored] == ["6920000000000001", "6920000000000002", "6920000000000004"]
    assert stored[0][2:] == (15970, 2)
    assert summary.report == tmp_path / "抖店订单.rejected.csv"
    rows = report_rows(summary.report)
    assert rows[0][:4] == ["行号 line", "订单号 order id", "原因 reason", "主订单编号"]
    assert rows[1][:3] == [
        "5",
        "6920000000000003",
        "数量必须大于 0 / quantity must be above 0: '0'",
    ]
    # When the same file is imported again
    again = await import_file(db, "dy_shop", source)
    # Then nothing new is created
    assert (again.created, again.updated, again.duplicates, again.rejected_rows) == (0, 0, 3, 1)
    assert await orders(db) == stored


async def test_a_gbk_jd_export_and_a_taobao_export(db: Database, tmp_path: Path) -> None:
    await account(db, "jd_shop", "jd")
    await account(db, "tb_shop", "taobao")
    jd = await import_file(
        db, "jd_shop", FIXTURES / "jd_orders.csv", errors_out=tmp_path / "jd.csv"
    )
    assert (jd.template, jd.created, jd.rejected_rows) == ("jd", 2, 1)
    assert report_rows(tmp_path / "jd.csv")[1][:2] == ["5", "301234567892"]
    tb = await import_file(
        db, "tb_shop", FIXTURES / "taobao_orders.csv", errors_out=tmp_path / "tb.csv"
    )
    assert (tb.template, tb.created, tb.rejected_rows) == ("taobao", 2, 1)
    stored = {o[0]: o for o in await orders(db)}
    assert stored["301234567891"][2:] == (9480, 2)  # 59.90 + 39.90 - 5.00
    assert stored["2088000000000001"][2:] == (6990, 2)  # 59.90 + 2 x 10.00 - 10.00
    assert stored["2088000000000002"][1] == "pending_payment"
    # The rejected Taobao row carries formulas: the report neutralises them
    bad = report_rows(tmp_path / "tb.csv")[1]
    assert bad[2] == "未知订单状态 / unknown status '神秘状态'"
    assert '\'=HYPERLINK("http://example.invalid","点我")' in bad
    assert "'=cmd|' /C calc'!A0" in bad
    assert not any(cell.startswith(("=", "+", "-", "@")) for cell in bad)


async def test_refusals(db: Database, tmp_path: Path) -> None:
    await account(db, "dy_shop", "douyin")
    await account(db, "amz", "amazon")
    with pytest.raises(ImportRefused):
        await import_file(db, "nope", FIXTURES / "douyin_orders.csv")
    with pytest.raises(ImportRefused):
        await import_file(db, "amz", FIXTURES / "douyin_orders.csv")
    with pytest.raises(ImportRefused):  # a JD file into a Douyin account
        await import_file(db, "dy_shop", FIXTURES / "jd_orders.csv")
    with pytest.raises(files.FileError):  # the Douyin template on a JD file: columns missing
        await import_file(db, "dy_shop", FIXTURES / "jd_orders.csv", template="douyin")
    assert await orders(db) == []


async def test_the_cli_exit_codes(db: Database, tmp_path: Path) -> None:
    import anyio

    from ordertally.cli import app

    await account(db, "any_file", "file")
    runner = CliRunner()

    async def run(*args: str) -> Any:
        # The command runs its own event loop and database engine, as from a shell.
        return await anyio.to_thread.run_sync(
            lambda: runner.invoke(app, ["import", "--account", "any_file", *args])
        )

    source = tmp_path / "generic.csv"
    shutil.copy(FIXTURES / "generic_orders.csv", source)
    # Some rows rejected: 2, with the summary and the report next to the file
    result = await run(str(source))
    assert result.exit_code == 2, result.output
    assert "新建 created" in result.output
    assert (tmp_path / "generic.rejected.csv").exists()
    # A missing or empty file, or an unknown template: 1
    assert (await run(str(tmp_path / "missing.csv"))).exit_code == 1
    (tmp_path / "empty.csv").write_text("")
    assert (await run(str(tmp_path / "empty.csv"))).exit_code == 1
    assert (await run("--template", "shopify", str(source))).exit_code == 1
    # Every row good: 0 (this order was already imported above: a duplicate, still fine)
    good = tmp_path / "good.csv"
    lines = (FIXTURES / "generic_orders.csv").read_text(encoding="utf-8").splitlines()
    good.write_text("\n".join(lines[:2]) + "\n", encoding="utf-8")
    result = await run("--errors", str(tmp_path / "out.csv"), str(good))
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out.csv").exists()
    assert [o[0] for o in await orders(db)] == ["G-1001"]


async def test_imported_orders_reach_one_customer_per_buyer(db: Database, tmp_path: Path) -> None:
    # Given a Taobao file where one buyer (tb_buyer_001) orders twice, the second time with
    # another phone, and another buyer once
    import ordertally.customers.consumers  # noqa: F401  (the customers consumers)
    from ordertally.core.settings import get_settings
    from ordertally.customers.models import Customer, CustomerOrder
    from ordertally.events.dispatcher import drain

    await account(db, "tb_shop", "taobao")
    header = (FIXTURES / "taobao_orders.csv").read_text(encoding="utf-8").splitlines()[0]

    def tb_row(no: str, buyer: str, status: str, name: str, phone: str, hour: int) -> str:
        address = "浙江省 杭州市 余杭区 文一西路1号"
        placed, paid = f"2026-11-20 {hour}:00:00", f"2026-11-20 {hour}:01:00"
        cells = [no, buyer, "0.00", "0.00", status, name, address, phone, placed, paid]
        return ",".join([*cells, "西湖龙井", "59.90", "1", "TEA-LJ-250"])

    body = [
        tb_row("2088000000000101", "tb_buyer_001", "等待卖家发货", "钱十", "13611112222", 12),
        tb_row("2088000000000102", "tb_buyer_001", "交易成功", "钱十", "13699998888", 13),
        tb_row("2088000000000103", "tb_buyer_002", "等待卖家发货", "孙十一", "13522223333", 14),
    ]
    source = tmp_path / "淘宝.csv"
    source.write_text("\n".join([header, *body]) + "\n", encoding="utf-8")
    summary = await import_file(db, "tb_shop", source)
    assert (summary.created, summary.rejected_rows) == (3, 0)
    # When the outbox is delivered
    await drain(db, get_settings())
    # Then the buyer id made one customer of the two phones
    async with db.transaction(write=False) as session:
        links = dict(
            (await session.execute(select(CustomerOrder.order_no, CustomerOrder.customer_id))).all()
        )
        live = await session.scalar(
            select(func.count()).select_from(Customer).where(Customer.merged_into_id.is_(None))
        )
        by_external = dict(
            (await session.execute(select(SalesOrder.external_id, SalesOrder.order_no))).all()
        )
    first, second, other = (links[by_external[f"208800000000010{i}"]] for i in (1, 2, 3))
    assert first == second != other
    assert live == 2


async def test_a_big_file_is_parsed_in_a_child_process_with_the_same_outcome(
    db: Database, tmp_path: Path
) -> None:
    # The path big files take (parsing in a child process), forced on the Douyin sample
    await account(db, "dy_shop", "douyin")
    source = tmp_path / "douyin.csv"
    source.write_bytes((FIXTURES / "douyin_orders.csv").read_bytes())
    in_thread = await import_file(db, "dy_shop", source, parse_process=False, chunk=1)
    again = await import_file(db, "dy_shop", source, parse_process=True, chunk=1)
    assert (in_thread.rows, in_thread.rejected_rows) == (again.rows, again.rejected_rows)
    assert in_thread.created == 3
    assert (again.created, again.duplicates) == (0, 3)
    assert len(await orders(db)) == 3


async def test_a_file_in_memory_imports_like_one_on_disk_in_a_thread_and_in_a_child(
    db: Database,
) -> None:
    # Given the Douyin sample held in memory (an upload decrypted for its import), and
    # somewhere to write the rejected rows in memory
    await account(db, "dy_shop", "douyin")
    data = (FIXTURES / "douyin_orders.csv").read_bytes()
    in_memory = files.InMemoryFile("douyin.csv", data)
    first, second = io.BytesIO(), io.BytesIO()
    # When it is imported in a thread, then through a child process
    in_thread = await import_file(
        db, "dy_shop", in_memory, parse_process=False, chunk=1, errors_out=first
    )
    in_child = await import_file(
        db, "dy_shop", in_memory, parse_process=True, chunk=1, errors_out=second
    )
    # Then the outcome is the disk file's, and the report went to memory, not next to a file
    assert (in_thread.rows, in_thread.created, in_thread.rejected_rows) == (5, 3, 1)
    assert (in_child.duplicates, in_child.rejected_rows) == (3, 1)
    assert in_thread.report is None and in_child.report is None
    assert first.getvalue() == second.getvalue()
    rows = list(csv.reader(io.StringIO(first.getvalue().decode("utf-8-sig"))))
    assert rows[1][:2] == ["5", "6920000000000003"]
    # And an in-memory file with no place for its rejected rows is refused before anything
    with pytest.raises(ValueError, match="errors_out"):
        await import_file(db, "dy_shop", files.InMemoryFile("new.csv", b"x"))
