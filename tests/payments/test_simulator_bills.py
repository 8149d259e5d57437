"""The simulator's statements parse back with the csv module and add up."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from ordertally.core import clock
from ordertally.payments.simulator import keys as sim_keys
from ordertally.payments.simulator.app import create_sim_app
from ordertally.payments.simulator.bills import (
    ALIPAY_COLUMNS,
    WECHAT_COLUMNS,
    WECHAT_SUMMARY_COLUMNS,
    BillRow,
    Provider,
    fee,
    write_bill,
)
from ordertally.payments.simulator.engine import Simulator
from ordertally.payments.simulator.keys import SimKeys

pytestmark = pytest.mark.anyio

# 12:00 in Beijing on 2026-11-23
NOON = datetime(2026, 11, 23, 4, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> SimKeys:
    return sim_keys.generate(tmp_path_factory.mktemp("paysim-bills"), "http://127.0.0.1:8900")


@pytest.fixture
async def sim_client(keys: SimKeys) -> AsyncIterator[tuple[Simulator, httpx.AsyncClient]]:
    app = create_sim_app(keys)
    sim: Simulator = app.state.sim
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://paysim.test") as client:
        yield sim, client
    await sim.aclose()


def wechat_rows(text: str) -> tuple[list[str], list[list[str]], list[str], list[str]]:
    """Header, data rows, summary header, summary values; back-ticks removed."""
    lines = list(csv.reader(io.StringIO(text)))
    header, *rest = lines
    summary_at = next(i for i, row in enumerate(rest) if row and row[0] == "总交易单数")
    data = [[cell.removeprefix("`") for cell in row] for row in rest[:summary_at]]
    summary = [cell.removeprefix("`") for cell in rest[summary_at + 1]]
    return header, data, rest[summary_at], summary


def alipay_rows(text: str) -> tuple[list[str], list[list[str]], list[str]]:
    """Column header, data rows and the '#' lines."""
    comments = [line for line in text.splitlines() if line.startswith("#")]
    body = [line for line in text.splitlines() if line and not line.startswith("#")]
    header, *data = list(csv.reader(io.StringIO("\n".join(body))))
    return header, data, comments


def _trades(sim: Simulator) -> None:
    """Three paid trades per provider (12.34, 5.00, 0.99) and a 2.34 refund of the first;
    one trade left unpaid, one paid the next day."""
    with clock.frozen(NOON):
        for provider in ("wechatpay", "alipay"):
            for i, amount in enumerate((1234, 500, 99, 777)):
                sim.create(provider, f"OT26112300{i}P01", amount, notify_url="", description="茶")
            for i in range(3):
                sim.pay(provider, f"OT26112300{i}P01")
        clock.advance(timedelta(minutes=5))
        for provider in ("wechatpay", "alipay"):
            sim.refund(provider, "OT261123000P01", 234, out_refund_no=f"RF-{provider}")
    with clock.frozen(NOON + timedelta(days=1)):
        for provider in ("wechatpay", "alipay"):
            sim.create(provider, "OT261124000P01", 5000, notify_url="")
            sim.pay(provider, "OT261124000P01")


async def test_wechat_trade_bill_parses_and_adds_up(
    sim_client: tuple[Simulator, httpx.AsyncClient],
) -> None:
    sim, client = sim_client
    _trades(sim)
    response = await client.get("/sim/bills/wechatpay", params={"date": "2026-11-23"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    header, data, summary_header, summary = wechat_rows(response.content.decode("utf-8"))
    assert header == WECHAT_COLUMNS and len(header) == 27
    assert summary_header == WECHAT_SUMMARY_COLUMNS
    # Every field but the header is prefixed with a back-tick on the wire
    assert all(line.startswith("`") for line in response.text.splitlines()[1:] if "总" not in line)
    rows = [dict(zip(header, row, strict=True)) for row in data]
    assert [(r["商户订单号"], r["交易状态"], r["应结订单总金额"], r["退款金额"]) for r in rows] == [
        ("OT261123000P01", "SUCCESS", "12.34", "0.00"),
        ("OT261123001P01", "SUCCESS", "5.00", "0.00"),
        ("OT261123002P01", "SUCCESS", "0.99", "0.00"),
        ("OT261123000P01", "REFUND", "0.00", "2.34"),
    ]
    assert rows[0]["交易时间"] == "2026-11-23 12:00:00"
    assert rows[3]["交易时间"] == "2026-11-23 12:05:00"
    assert rows[3]["商户退款单号"] == "RF-wechatpay"
    assert rows[0]["微信订单号"] == sim.get("wechatpay", "OT261123000P01").trade_no
    assert {r["商户号"] for r in rows} == {sim.keys.mchid}
    assert {r["商品名称"] for r in rows} == {"茶"}
    totals = dict(zip(summary_header, summary, strict=True))
    assert totals == {
        "总交易单数": "4",
        "应结订单总金额": "18.33",
        "退款总金额": "2.34",
        "充值券退款总金额": "0.00",
        "手续费总金额": f"{Decimal(fee(1234) + fee(500) + fee(99) - fee(234)) / 100:.2f}",
        "订单总金额": "18.33",
        "申请退款总金额": "2.34",
    }
    # The next day holds only the next day's trade
    other = await client.get("/sim/bills/wechatpay", params={"date": "2026-11-24"})
    _, next_day, _, next_summary = wechat_rows(other.text)
    assert [row[6] for row in next_day] == ["OT261124000P01"]
    assert next_summary[0] == "1"


async def test_alipay_business_detail_is_gb18030_and_adds_up(
    sim_client: tuple[Simulator, httpx.AsyncClient],
) -> None:
    sim, client = sim_client
    _trades(sim)
    response = await client.get("/sim/bills/alipay", params={"date": "2026-11-23"})
    assert response.headers["content-type"] == "text/csv; charset=gb18030"
    with pytest.raises(UnicodeDecodeError):
        response.content.decode("utf-8")
    header, data, comments = alipay_rows(response.content.decode("gb18030"))
    assert header == ALIPAY_COLUMNS and len(header) == 25
    assert comments[0] == "#支付宝业务明细查询"
    assert comments[1] == f"#账号：[{sim.keys.alipay_seller_id}]"
    assert "2026年11月23日 00:00:00" in comments[2]
    rows = [dict(zip(header, row, strict=True)) for row in data]
    assert [
        (r["商户订单号"], r["业务类型"], r["订单金额（元）"], r["商家实收（元）"]) for r in rows
    ] == [
        ("OT261123000P01", "交易", "12.34", "12.34"),
        ("OT261123001P01", "交易", "5.00", "5.00"),
        ("OT261123002P01", "交易", "0.99", "0.99"),
        ("OT261123000P01", "退款", "12.34", "-2.34"),
    ]
    assert rows[3]["退款批次号/请求号"] == "RF-alipay"
    assert rows[0]["支付宝交易号"] == sim.get("alipay", "OT261123000P01").trade_no
    assert rows[0]["完成时间"] == "2026-11-23 12:00:00"
    trade_total = re.search(r"#交易合计：(\d+)笔，商家实收共([\d.]+)元", "\n".join(comments))
    refund_total = re.search(r"#退款合计：(\d+)笔，商家实收退款共(-?[\d.]+)元", "\n".join(comments))
    assert trade_total is not None and trade_total.groups() == ("3", "18.33")
    assert refund_total is not None and refund_total.groups() == ("1", "-2.34")


def test_write_bill_streams_large_files_that_parse_back(tmp_path: Path) -> None:
    # Given 30,000 payments and 1,000 refunds spread over the day
    def rows() -> list[BillRow]:
        out = [
            BillRow(f"OT2611230{i:08d}P01", f"42000{i:023d}", 100 + i, NOON + timedelta(seconds=i))
            for i in range(30_000)
        ]
        out += [
            BillRow(
                f"OT2611230{i:08d}P01",
                f"42000{i:023d}",
                100 + i,
                NOON + timedelta(hours=9),
                kind="refund",
                refund_minor=50,
                out_refund_no=f"RF{i}",
                refund_id=f"50{i:027d}",
            )
            for i in range(1_000)
        ]
        return out

    paid = sum(100 + i for i in range(30_000))
    providers: tuple[Provider, ...] = ("wechatpay", "alipay")
    for provider in providers:
        path = tmp_path / f"{provider}.csv"
        # When it is written
        totals = write_bill(provider, rows(), path, bill_date=date(2026, 11, 23))
        # Then the totals are the rows', and the file says the same
        assert (totals.rows, totals.payments, totals.refunds) == (31_000, 30_000, 1_000)
        assert (totals.paid_minor, totals.refunded_minor) == (paid, 50_000)
        if provider == "wechatpay":
            _, data, _, summary = wechat_rows(path.read_text("utf-8"))
            assert len(data) == 31_000
            assert summary[:3] == ["31000", f"{Decimal(paid) / 100:.2f}", "500.00"]
            assert sum(Decimal(r[12]) for r in data) == Decimal(paid) / 100
        else:
            _, data, comments = alipay_rows(path.read_text("gb18030"))
            assert len(data) == 31_000
            assert sum(Decimal(r[12]) for r in data) == Decimal(paid - 50_000) / 100
            assert any(f"商家实收共{Decimal(paid) / 100:.2f}元" in c for c in comments)
