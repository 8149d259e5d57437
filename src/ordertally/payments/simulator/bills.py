"""The platforms' downloadable statements: WeChat Pay's trade bill (CSV, every field prefixed
with a back-tick, summary rows at the end, UTF-8) and Alipay's business-detail CSV ('#' header
and summary lines, GB18030). `write_bill(provider, rows, path)` streams a file of any size
(a million rows in a few seconds); `render_bill` returns the bytes for the simulator's API.

Row semantics: a payment row carries the order amount; a refund row (WeChat 交易状态 REFUND,
Alipay 业务类型 退款) carries the refund, its ids and, for Alipay, a negative 商家实收.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Literal

from ordertally.core import clock
from ordertally.payments.simulator.keys import ALIPAY_SELLER_ID, WECHATPAY_APPID, WECHATPAY_MCHID
from ordertally.payments.simulator.messages import BEIJING

Provider = Literal["wechatpay", "alipay"]

WECHAT_COLUMNS = [
    "交易时间",
    "公众账号ID",
    "商户号",
    "特约商户号",
    "设备号",
    "微信订单号",
    "商户订单号",
    "用户标识",
    "交易类型",
    "交易状态",
    "付款银行",
    "货币种类",
    "应结订单总金额",
    "代金券金额",
    "微信退款单号",
    "商户退款单号",
    "退款金额",
    "充值券退款金额",
    "退款类型",
    "退款状态",
    "商品名称",
    "商户数据包",
    "手续费",
    "费率",
    "订单金额",
    "申请退款金额",
    "费率备注",
]
WECHAT_SUMMARY_COLUMNS = [
    "总交易单数",
    "应结订单总金额",
    "退款总金额",
    "充值券退款总金额",
    "手续费总金额",
    "订单总金额",
    "申请退款总金额",
]
ALIPAY_COLUMNS = [
    "支付宝交易号",
    "商户订单号",
    "业务类型",
    "商品名称",
    "创建时间",
    "完成时间",
    "门店编号",
    "门店名称",
    "操作员",
    "终端号",
    "对方账户",
    "订单金额（元）",
    "商家实收（元）",
    "支付宝红包（元）",
    "集分宝（元）",
    "支付宝优惠（元）",
    "商家优惠（元）",
    "券核销金额（元）",
    "券名称",
    "商家红包消费金额（元）",
    "卡消费金额（元）",
    "退款批次号/请求号",
    "服务费（元）",
    "分润（元）",
    "备注",
]
# Both platforms' standard rate for the simulated merchant: 0.6 %, rounded half up to the fen.
FEE_RATE_PER_MILLE = 6
_CHUNK = 20_000


@dataclass(frozen=True, slots=True)
class BillRow:
    """One statement line: a payment, or a refund of one."""

    out_trade_no: str
    trade_no: str
    amount_minor: int
    at: datetime
    kind: Literal["payment", "refund"] = "payment"
    refund_minor: int = 0
    out_refund_no: str = ""
    refund_id: str = ""
    subject: str = "ordertally order"
    buyer: str = ""


@dataclass(slots=True)
class BillTotals:
    """What the summary lines of a statement say."""

    rows: int = 0
    payments: int = 0
    refunds: int = 0
    paid_minor: int = 0
    refunded_minor: int = 0
    fee_minor: int = 0


def fee(minor: int) -> int:
    """The platform's fee on an amount (0.6 %, half up)."""
    return (minor * FEE_RATE_PER_MILLE + 500) // 1000


def _money(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    units, cents = divmod(abs(minor), 100)
    return f"{sign}{units}.{cents:02d}"


def _text(value: str) -> str:
    # Neither platform quotes its CSV: keep free text from breaking the columns.
    return value.replace(",", "，").replace('"', "'").replace("\r", " ").replace("\n", " ")


_local_cache: dict[datetime, str] = {}


def _local(at: datetime) -> str:
    # Statements repeat timestamps (one per second at most); formatting is the slow part.
    text = _local_cache.get(at)
    if text is None:
        if len(_local_cache) > 100_000:
            _local_cache.clear()
        text = clock.as_utc(at).astimezone(BEIJING).strftime("%Y-%m-%d %H:%M:%S")
        _local_cache[at] = text
    return text


def _wechat_lines(
    rows: Iterable[BillRow], totals: BillTotals, appid: str, mchid: str
) -> Iterator[str]:
    yield ",".join(WECHAT_COLUMNS)
    fixed_head = f"`{appid},`{mchid},`0,`,"
    for row in rows:
        refund = row.kind == "refund"
        if refund:
            row_fee = -fee(row.refund_minor)
            settle, order, refund_amount = 0, 0, row.refund_minor
            state, ids = "REFUND", f"`{row.refund_id},`{row.out_refund_no},`{_money(refund_amount)}"
            refund_kind = "`0.00,`ORIGINAL,`SUCCESS"
            totals.refunds += 1
            totals.refunded_minor += refund_amount
        else:
            row_fee = fee(row.amount_minor)
            settle, order, refund_amount = row.amount_minor, row.amount_minor, 0
            state, ids, refund_kind = "SUCCESS", "`0,`0,`0.00", "`0.00,`,`"
            totals.payments += 1
            totals.paid_minor += settle
        totals.rows += 1
        totals.fee_minor += row_fee
        yield (
            f"`{_local(row.at)},{fixed_head}`{row.trade_no},`{row.out_trade_no},`{row.buyer},"
            f"`NATIVE,`{state},`OTHERS,`CNY,`{_money(settle)},`0.00,{ids},{refund_kind},"
            f"`{_text(row.subject)},`,`{_money(row_fee)},`0.60%,`{_money(order)},"
            f"`{_money(refund_amount)},`"
        )
    yield ",".join(WECHAT_SUMMARY_COLUMNS)
    yield (
        f"`{totals.rows},`{_money(totals.paid_minor)},`{_money(totals.refunded_minor)},`0.00,"
        f"`{_money(totals.fee_minor)},`{_money(totals.paid_minor)},"
        f"`{_money(totals.refunded_minor)}"
    )


def _cn_time(at: datetime) -> str:
    return at.strftime("%Y年%m月%d日 %H:%M:%S")


def _alipay_lines(
    rows: Iterable[BillRow], totals: BillTotals, account: str, bill_date: date
) -> Iterator[str]:
    start = datetime(bill_date.year, bill_date.month, bill_date.day, tzinfo=BEIJING)
    yield "#支付宝业务明细查询"
    yield f"#账号：[{account}]"
    yield f"#起始日期：[{_cn_time(start)}]   终止日期：[{_cn_time(start + timedelta(days=1))}]"
    yield "#" + "-" * 41 + "业务明细列表" + "-" * 40
    yield ",".join(ALIPAY_COLUMNS)
    for row in rows:
        finished = _local(row.at)
        if row.kind == "refund":
            received, service, kind = -row.refund_minor, fee(row.refund_minor), "退款"
            batch = row.out_refund_no
            totals.refunds += 1
            totals.refunded_minor += row.refund_minor
        else:
            received, service, kind, batch = row.amount_minor, -fee(row.amount_minor), "交易", ""
            totals.payments += 1
            totals.paid_minor += row.amount_minor
        totals.rows += 1
        totals.fee_minor -= service
        yield (
            f"{row.trade_no},{row.out_trade_no},{kind},{_text(row.subject)},{finished},"
            f"{finished},,,,,{row.buyer},{_money(row.amount_minor)},{_money(received)},"
            f"0.00,0.00,0.00,0.00,0.00,,0.00,0.00,{batch},{_money(service)},0.00,"
        )
    yield "#" + "-" * 41 + "业务明细列表结束" + "-" * 36
    yield (
        f"#交易合计：{totals.payments}笔，商家实收共{_money(totals.paid_minor)}元，商家优惠共0.00元"
    )
    yield (
        f"#退款合计：{totals.refunds}笔，商家实收退款共{_money(-totals.refunded_minor)}元，"
        "商家优惠退款共0.00元"
    )
    yield f"#导出时间：[{_cn_time(clock.now().astimezone(BEIJING))}]"


def bill_lines(
    provider: Provider,
    rows: Iterable[BillRow],
    totals: BillTotals,
    *,
    bill_date: date | None = None,
    appid: str = WECHATPAY_APPID,
    mchid: str = WECHATPAY_MCHID,
    account: str = ALIPAY_SELLER_ID,
) -> Iterator[str]:
    """The statement's lines (no line ends); `totals` is filled in as the rows go by."""
    if provider == "wechatpay":
        return _wechat_lines(rows, totals, appid, mchid)
    if provider == "alipay":
        day = bill_date or clock.now().astimezone(BEIJING).date()
        return _alipay_lines(rows, totals, account, day)
    raise ValueError(f"unknown provider {provider!r}")


def encoding(provider: Provider) -> str:
    """The file's encoding as the platform delivers it."""
    return "gb18030" if provider == "alipay" else "utf-8"


def write_bill(
    provider: Provider,
    rows: Iterable[BillRow],
    path: Path,
    *,
    bill_date: date | None = None,
    appid: str = WECHATPAY_APPID,
    mchid: str = WECHATPAY_MCHID,
    account: str = ALIPAY_SELLER_ID,
) -> BillTotals:
    """Stream a statement file (CRLF lines, the platform's encoding); returns its totals."""
    totals = BillTotals()
    lines = bill_lines(
        provider, rows, totals, bill_date=bill_date, appid=appid, mchid=mchid, account=account
    )
    charset = encoding(provider)
    buffer: list[str] = []
    with Path(path).open("wb") as out:
        for line in lines:
            buffer.append(line)
            if len(buffer) >= _CHUNK:
                out.write(("\r\n".join(buffer) + "\r\n").encode(charset))
                buffer.clear()
        if buffer:
            out.write(("\r\n".join(buffer) + "\r\n").encode(charset))
    return totals


def render_bill(
    provider: Provider,
    rows: Iterable[BillRow],
    *,
    bill_date: date | None = None,
    appid: str = WECHATPAY_APPID,
    mchid: str = WECHATPAY_MCHID,
    account: str = ALIPAY_SELLER_ID,
) -> bytes:
    """A whole statement in memory (the simulator's download endpoints)."""
    out = io.StringIO()
    for line in bill_lines(
        provider, rows, BillTotals(), bill_date=bill_date, appid=appid, mchid=mchid, account=account
    ):
        out.write(line + "\r\n")
    return out.getvalue().encode(encoding(provider))
