"""Statement reconciliation: every trade sorted into exactly one category; platform-only
payments applied through the inbox; the CLI prints the table and writes the CSV."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.payments import reconcile
from ordertally.payments.errors import StatementInvalid
from ordertally.payments.models import ManualPayment, Payment, PaymentReconciliation
from tests.factories import make_order
from tests.payments.helpers import (
    cases,
    count,
    make_attempt,
    order_state,
    paid_notice,
    store_and_apply,
    trail,
)

pytestmark = pytest.mark.anyio

AT = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)  # 10:00 in Beijing
WECHAT_HEADER = (
    "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,"
    "交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,"
    "充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注"
)


def wechat_row(no: str, txn: str, state: str, amount: str, refund: str = "0.00") -> str:
    fields = [
        "2026-11-22 10:00:05", "wxd678efh567hg6787", "1900000109", "0", "", txn, no, "oUpF8u",
        "NATIVE", state, "OTHERS", "CNY", amount, "0.00", "0" if refund == "0.00" else "5030",
        "0" if refund == "0.00" else "R-1", refund, "0.00", "", "", "商品", "", "0.00000",
        "0.60%", amount, refund, "",
    ]  # fmt: skip
    return ",".join("`" + f for f in fields)


def wechat_bill(rows: list[str]) -> str:
    summary = (
        "总交易单数,应结订单总金额,退款总金额,充值券退款总金额,"
        "手续费总金额,订单总金额,申请退款总金额"
    )
    return (
        "\n".join([WECHAT_HEADER, *rows, summary, "`2,`1.00,`0.00,`0.00,`0.00,`1.00,`0.00"]) + "\n"
    )


async def _paid(db: Database, provider: str = "wechatpay") -> Payment:
    order = await make_order(db)
    attempt = await make_attempt(db, order, provider)
    _, outcome = await store_and_apply(db, paid_notice(attempt, txn=f"T-{attempt.out_trade_no}"))
    assert outcome == "paid"
    return attempt


async def manual_rows(db: Database) -> list[tuple[int, str, str, str, str]]:
    """(id, order_no, state, requested_by, reference) of every manual-payment request."""
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(ManualPayment).order_by(ManualPayment.id))).all()
    return [(m.id, m.order_no, m.state, m.requested_by, m.reference) for m in rows]


def yuan(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


async def test_every_trade_lands_in_one_category(db: Database, tmp_path: Path) -> None:
    with clock.frozen(AT):
        matched = await _paid(db)
        here_only = await _paid(db)
        wrong_amount = await _paid(db)
        refunded_there = await _paid(db)
        unpaid_order = await make_order(db)
        unpaid = await make_attempt(db, unpaid_order)
    amount = yuan(matched.amount_minor)
    bill = wechat_bill(
        [
            wechat_row(matched.out_trade_no, f"T-{matched.out_trade_no}", "SUCCESS", amount),
            wechat_row(unpaid.out_trade_no, "4200PLATFORM1", "SUCCESS", amount),
            wechat_row(wrong_amount.out_trade_no, "T-x", "SUCCESS", "0.01"),
            wechat_row(refunded_there.out_trade_no, "T-y", "SUCCESS", amount),
            wechat_row(refunded_there.out_trade_no, "T-y", "REFUND", amount, refund="10.00"),
            wechat_row("NOBODY-KNOWS-1", "4200PLATFORM2", "SUCCESS", "9.99"),
        ]
    )
    path = tmp_path / "wechat.csv"
    path.write_text(bill, encoding="utf-8")
    # When the bill is reconciled
    report = await reconcile.run_file(db, "wechatpay", path, run_by="tester")
    # Then each trade is in exactly one category
    assert report.rows == 6
    assert report.counts == {
        "matched": 1,
        "platform_only": 2,
        "ordertally_only": 1,
        "amount_mismatch": 1,
        "status_mismatch": 1,
    }
    by_no = {d["out_trade_no"]: d for d in report.discrepancies}
    assert by_no[here_only.out_trade_no]["category"] == "ordertally_only"
    assert by_no[wrong_amount.out_trade_no]["platform_amount_minor"] == 1
    assert by_no[refunded_there.out_trade_no]["platform_refunded_minor"] == 1000
    # And the platform-only payment, which no platform confirmed (no provider is configured
    # here), became a manual-payment request by the uploader: the order stays unpaid
    manual = await manual_rows(db)
    assert (by_no[unpaid.out_trade_no]["applied"], by_no["NOBODY-KNOWS-1"]["applied"]) == (
        f"manual_requested:{manual[0][0]}",
        "unknown_trade",
    )
    assert [m[1:] for m in manual] == [
        (unpaid_order.order_no, "pending_approval", "tester", "statement:4200PLATFORM1")
    ]
    assert await order_state(db, unpaid_order.order_no) == ("pending_payment", 1)
    assert await trail(db, unpaid_order.id) == []
    assert len(await cases(db, "unknown_trade")) == 1
    assert await count(db, PaymentReconciliation) == 1
    # And a second run opens no second request and still pays nothing
    again = await reconcile.run_file(db, "wechatpay", path, run_by="tester")
    assert again.counts["matched"] == 1
    assert again.counts["platform_only"] == 2
    again_only = [d for d in again.discrepancies if d["category"] == "platform_only"]
    assert sorted(d["applied"] for d in again_only) == [
        "already_recorded",
        "not_applied:conflict",
    ]
    assert len(await manual_rows(db)) == 1
    assert await trail(db, unpaid_order.id) == []
    # And the CSV lists every discrepancy with its category
    out = io.StringIO()
    reconcile.write_csv(again, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert sorted(r["category"] for r in rows) == [
        "amount_mismatch",
        "ordertally_only",
        "platform_only",
        "platform_only",
        "status_mismatch",
    ]


ALIPAY_HEADER = (
    "支付宝交易号,商户订单号,业务类型,商品名称,创建时间,完成时间,门店编号,门店名称,操作员,"
    "终端号,对方账户,订单金额（元）,商家实收（元）,支付宝红包（元）,集分宝（元）,支付宝优惠（元）,"
    "商家优惠（元）,券核销金额（元）,券名称,商家红包消费金额（元）,卡消费金额（元）,"
    "退款批次号/请求号,服务费（元）,分润（元）,备注"
)


def alipay_row(txn: str, no: str, kind: str, total: str, received: str, batch: str = "") -> str:
    fields = [
        txn, no, kind, "商品", "2026-11-22 09:59:00", "2026-11-22 10:00:05", "", "", "", "",
        "buyer@example.com", total, received, "0.00", "0.00", "0.00", "0.00", "0.00", "",
        "0.00", "0.00", batch, "-0.01", "0.00", "",
    ]  # fmt: skip
    return ",".join(f + "\t" for f in fields)


async def test_alipay_business_detail_in_gb18030(db: Database, tmp_path: Path) -> None:
    with clock.frozen(AT):
        matched = await _paid(db, "alipay")
        refunded = await _paid(db, "alipay")
    amount = yuan(matched.amount_minor)
    lines = [
        "#支付宝业务明细查询",
        "#账号：[20880000000000000156]",
        "#起始日期：[2026年11月22日 00:00:00]   终止日期：[2026年11月23日 00:00:00]",
        "#-----------------------------------------业务明细列表----------------------------------------",
        ALIPAY_HEADER,
        alipay_row(f"T-{matched.out_trade_no}", matched.out_trade_no, "交易", amount, amount),
        alipay_row(f"T-{refunded.out_trade_no}", refunded.out_trade_no, "交易", amount, amount),
        alipay_row(
            f"T-{refunded.out_trade_no}", refunded.out_trade_no, "退款", amount, "-" + amount, "B1"
        ),
        "#-----------------------------------------业务明细列表结束------------------------------------",
        "#交易合计：2笔，商家实收共0.02元，商家优惠共0.00元",
        "#退款合计：1笔，商家实收共-0.01元，商家优惠共0.00元",
        "#导出时间：[2026年11月23日 09:00:00]",
    ]
    path = tmp_path / "alipay.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("gb18030"))
    report = await reconcile.run_file(db, "alipay", path, run_by="tester", apply=False)
    assert report.rows == 3
    assert (report.counts["matched"], report.counts["status_mismatch"]) == (1, 1)
    assert sum(report.counts.values()) == 2
    assert await count(db, PaymentReconciliation) == 0  # a dry run records nothing


def test_a_file_in_another_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StatementInvalid):
        reconcile.parse("wechatpay", io.StringIO("order,amount\n1,2\n"))
    with pytest.raises(StatementInvalid):
        reconcile.parse("alipay", io.StringIO("#只有注释\n"))


@pytest.mark.parametrize("provider", ["wechatpay", "alipay"])
async def test_the_simulators_bills_reconcile_clean(
    db: Database, tmp_path: Path, provider: str
) -> None:
    from ordertally.payments.simulator import bills

    # Given three payments we hold as paid, one of them since refunded on the platform
    with clock.frozen(AT):
        paid = [await _paid(db, provider) for _ in range(3)]
    rows = [bills.BillRow(p.out_trade_no, f"T-{p.out_trade_no}", p.amount_minor, AT) for p in paid]
    rows.append(
        bills.BillRow(
            paid[0].out_trade_no,
            f"T-{paid[0].out_trade_no}",
            paid[0].amount_minor,
            AT,
            kind="refund",
            refund_minor=500,
            out_refund_no="R-1",
            refund_id="5030",
        )
    )
    path = tmp_path / f"{provider}.csv"
    bills.write_bill(provider, rows, path)  # type: ignore[arg-type]
    # When it is reconciled
    report = await reconcile.run_file(db, provider, path, run_by="tester")
    # Then two trades match and the refund we have not heard of is a status mismatch
    assert report.rows == 4
    assert report.counts == {
        "matched": 2,
        "platform_only": 0,
        "ordertally_only": 0,
        "amount_mismatch": 0,
        "status_mismatch": 1,
    }
    [item] = report.discrepancies
    assert (item["out_trade_no"], item["platform_refunded_minor"]) == (paid[0].out_trade_no, 500)


async def test_the_reconcile_command_prints_the_table_and_writes_the_csv(
    db: Database, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    with clock.frozen(AT):
        paid = await _paid(db)
        pending_order = await make_order(db)
        pending = await make_attempt(db, pending_order)
    amount = yuan(paid.amount_minor)
    bill = tmp_path / "bill.csv"
    bill.write_text(
        wechat_bill(
            [
                wechat_row(paid.out_trade_no, f"T-{paid.out_trade_no}", "SUCCESS", amount),
                wechat_row(pending.out_trade_no, "4200CLI", "SUCCESS", amount),
            ]
        ),
        encoding="utf-8",
    )
    out = tmp_path / "report.csv"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ordertally", "reconcile", *args],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ.copy(),
            check=False,
        )

    # A dry run reports without applying anything
    dry = cli("--provider", "wechatpay", "--dry-run", str(bill))
    assert dry.returncode == 0, dry.stderr
    assert "platform_only" in dry.stdout and "matched" in dry.stdout
    assert await order_state(db, pending_order.order_no) == ("pending_payment", 1)
    # The real run (no platform to confirm the row) requests a manual payment and writes the CSV
    run = cli("--provider", "wechatpay", "--out", str(out), "--run-by", "finance-1", str(bill))
    assert run.returncode == 0, run.stderr
    assert "1 rows the platform did not confirm" in run.stdout
    assert await order_state(db, pending_order.order_no) == ("pending_payment", 1)
    [(manual_id, *manual)] = await manual_rows(db)
    assert manual == [pending_order.order_no, "pending_approval", "finance-1", "statement:4200CLI"]
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [(r["category"], r["out_trade_no"], r["applied"]) for r in rows] == [
        ("platform_only", pending.out_trade_no, f"manual_requested:{manual_id}")
    ]
    async with db.transaction(write=False) as session:
        from sqlalchemy import select

        run_by = await session.scalar(select(PaymentReconciliation.run_by))
    assert run_by == "finance-1"
    # A wrong provider is refused with exit code 2
    assert cli("--provider", "paypal", str(bill)).returncode == 2
