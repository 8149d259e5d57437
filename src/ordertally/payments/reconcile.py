"""Statement reconciliation: read a platform's trade bill as a stream, load our side in bulk,
and sort every trade into matched / platform_only / ordertally_only / amount_mismatch /
status_mismatch. A platform-only payment pays its order only once the platform's signed query
answer confirms it; an unconfirmed row becomes a manual-payment request in the uploader's name
(two people decide it), since an uploaded file proves nothing by itself (ADR 0030).

Formats: WeChat Pay's trade bill (CSV, every field prefixed with a back-tick, two summary rows
at the end) and Alipay's business-detail statement (CSV in GB18030, `#` comment lines around
the table, fields padded with tabs).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core import clock, money
from ordertally.core.db import Database
from ordertally.core.errors import OrdertallyError
from ordertally.core.spreadsheet import safe_cell, safe_mapping
from ordertally.payments import apply, compensation, gateway, inbox, repository
from ordertally.payments import manual as manual_service
from ordertally.payments.errors import StatementInvalid
from ordertally.payments.models import Payment
from ordertally.payments.providers import QueryResult

CATEGORIES = ("matched", "platform_only", "ordertally_only", "amount_mismatch", "status_mismatch")
BEIJING = ZoneInfo("Asia/Shanghai")
CSV_COLUMNS = (
    "category",
    "out_trade_no",
    "provider_txn_id",
    "platform_status",
    "platform_amount_minor",
    "platform_refunded_minor",
    "ordertally_state",
    "ordertally_amount_minor",
    "ordertally_refunded_minor",
    "order_no",
    "applied",
)

WECHAT_COLUMNS: dict[str, tuple[str, ...]] = {
    "time": ("交易时间",),
    "txn": ("微信订单号",),
    "out_trade_no": ("商户订单号",),
    "state": ("交易状态",),
    "settled": ("应结订单金额", "应结订单总金额"),
    "refund": ("退款金额",),
    "total": ("订单金额",),
}
ALIPAY_COLUMNS: dict[str, tuple[str, ...]] = {
    "txn": ("支付宝交易号",),
    "out_trade_no": ("商户订单号",),
    "kind": ("业务类型",),
    "created": ("创建时间",),
    "finished": ("完成时间",),
    "total": ("订单金额（元）", "订单金额(元)"),
    "received": ("商家实收（元）", "商家实收(元)"),
}


@dataclass(slots=True)
class Trade:
    """One out_trade_no as the statement tells it (payment and refund rows merged)."""

    txn: str
    paid_minor: int = 0
    refunded_minor: int = 0
    paid: bool = False
    paid_at: str = ""


@dataclass(slots=True)
class Statement:
    provider: str
    trades: dict[str, Trade]
    rows: int
    first_time: str | None
    last_time: str | None

    def window(self) -> tuple[datetime, datetime] | None:
        """The local days the statement covers, as a UTC range."""
        if not self.first_time or not self.last_time:
            return None
        first = datetime.strptime(self.first_time[:10], "%Y-%m-%d").replace(tzinfo=BEIJING)
        last = datetime.strptime(self.last_time[:10], "%Y-%m-%d").replace(tzinfo=BEIJING)
        return first.astimezone(UTC), (last + timedelta(days=1)).astimezone(UTC)


@dataclass(slots=True)
class Report:
    provider: str
    rows: int
    counts: dict[str, int]
    discrepancies: list[dict[str, Any]]
    matched: list[str] = field(default_factory=list)
    window: tuple[datetime, datetime] | None = None
    reconciliation_id: int | None = None


def _minor(value: str) -> int:
    """A yuan amount ("12.30", "-0.01", "`5") as fen, without Decimal (this runs 1M times)."""
    text = value.strip().lstrip("`").strip()
    if not text:
        return 0
    negative = text.startswith("-")
    whole, _, frac = text.lstrip("+-").partition(".")
    if len(frac) > 2 and frac[2:].strip("0"):
        raise ValueError(f"{value!r} has more than two decimals")
    minor = int(whole or "0") * 100 + int((frac + "00")[:2])
    return -minor if negative else minor


def _index(
    header: list[str], wanted: dict[str, tuple[str, ...]], optional: set[str]
) -> dict[str, int]:
    names = [h.strip().lstrip("\ufeff").lstrip("`").strip() for h in header]
    found: dict[str, int] = {}
    for key, aliases in wanted.items():
        for name in aliases:
            if name in names:
                found[key] = names.index(name)
                break
        else:
            if key not in optional:
                raise StatementInvalid(f"the statement has no {aliases[0]!r} column")
    return found


def _fen(value: str) -> int:
    """Fast path of _minor for the platforms' usual "12.34" (this runs a million times)."""
    if len(value) > 3 and value[-3] == ".":
        try:
            return int(value[:-3] + value[-2:])
        except ValueError:
            pass
    return _minor(value)


def _fields(lines: Iterable[str]) -> Iterator[list[str]]:
    """Split CSV lines; neither platform quotes its fields, so a plain split is enough unless a
    line has a quote (then the csv module reads it)."""
    for line in lines:
        if '"' in line:
            yield from csv.reader([line])
        else:
            yield line.rstrip("\r\n").split(",")


def parse_wechat(lines: Iterable[str]) -> Statement:
    """WeChat Pay trade bill: header, back-tick rows, then 总交易单数 summary rows."""
    rows_in = _fields(lines)
    header = next(rows_in, None)
    if header is None:
        raise StatementInvalid("the statement is empty")
    col = _index(header, WECHAT_COLUMNS, {"total", "refund", "settled"})
    if "total" not in col and "settled" not in col:
        raise StatementInvalid("the statement has no amount column")
    i_time, i_txn, i_no, i_state = col["time"], col["txn"], col["out_trade_no"], col["state"]
    i_amount = col.get("total", col.get("settled", 0))
    i_refund = col.get("refund")
    width = max(i_time, i_txn, i_no, i_state, i_amount, i_refund or 0)
    trades: dict[str, Trade] = {}
    rows = 0
    first = last = ""
    for row in rows_in:
        if len(row) <= width:
            if row and row[0].startswith("总"):
                break
            continue
        rows += 1
        moment = row[i_time]
        if not first or moment < first:
            first = moment
        if moment > last:
            last = moment
        out_trade_no = row[i_no].lstrip("`")
        trade = trades.get(out_trade_no)
        if trade is None:
            trade = trades[out_trade_no] = Trade(row[i_txn].lstrip("`"))
        state = row[i_state].lstrip("`")
        if state == "SUCCESS":
            trade.paid = True
            trade.paid_at = moment
            trade.paid_minor = _fen(row[i_amount].lstrip("`"))
        elif state == "REFUND" and i_refund is not None:
            trade.refunded_minor += _fen(row[i_refund].lstrip("`"))
    first, last = first.lstrip("`"), last.lstrip("`")
    return Statement("wechatpay", trades, rows, first or None, last or None)


def parse_alipay(lines: Iterable[str]) -> Statement:
    """Alipay business-detail statement: `#` lines around a table of 交易 / 退款 rows."""
    body = (line for line in lines if line.strip() and not line.startswith("#"))
    rows_in = _fields(body)
    header = next(rows_in, None)
    if header is None:
        raise StatementInvalid("the statement is empty")
    col = _index(header, ALIPAY_COLUMNS, {"created", "received"})
    i_txn, i_no, i_kind, i_total = col["txn"], col["out_trade_no"], col["kind"], col["total"]
    i_time = col["finished"]
    i_received = col.get("received")
    width = max(i_txn, i_no, i_kind, i_total, i_time, i_received or 0)
    trades: dict[str, Trade] = {}
    rows = 0
    first = last = ""
    for row in rows_in:
        if len(row) <= width:
            continue
        rows += 1
        moment = row[i_time].strip()
        if moment:
            if not first or moment < first:
                first = moment
            if moment > last:
                last = moment
        out_trade_no = row[i_no].strip()
        trade = trades.get(out_trade_no)
        if trade is None:
            trade = trades[out_trade_no] = Trade(row[i_txn].strip())
        kind = row[i_kind].strip()
        if kind == "交易":
            trade.paid = True
            trade.paid_at = moment
            trade.paid_minor = _fen(row[i_total].strip())
        elif kind == "退款" and i_received is not None:
            trade.refunded_minor += abs(_fen(row[i_received].strip()))
    return Statement("alipay", trades, rows, first or None, last or None)


def open_statement(path: Path, provider: str) -> IO[str]:
    """A text stream of a statement file in its platform's encoding."""
    if provider == "alipay":
        raw = path.read_bytes()[:3]
        encoding = "utf-8-sig" if raw == b"\xef\xbb\xbf" else "gb18030"
    else:
        encoding = "utf-8-sig"
    return open(path, encoding=encoding, newline="")


def decode_statement(data: bytes, provider: str) -> IO[str]:
    """A text stream of an uploaded statement (UTF-8 with or without BOM, or GB18030)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("gb18030")
    return io.StringIO(text, newline="")


def parse(provider: str, lines: Iterable[str]) -> Statement:
    """Parse a statement of a provider."""
    try:
        if provider == "wechatpay":
            return parse_wechat(lines)
        if provider == "alipay":
            return parse_alipay(lines)
    except (ValueError, IndexError, csv.Error) as exc:
        raise StatementInvalid(f"the statement cannot be read: {exc}") from exc
    raise StatementInvalid(f"unknown provider {provider!r}")


def file_sha256(path: Path) -> str:
    """The statement's digest, recorded with the run."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _row(
    category: str, out_trade_no: str, trade: Trade | None, ours: Sequence[Any] | None
) -> dict[str, Any]:
    return {
        "category": category,
        "out_trade_no": out_trade_no,
        "provider_txn_id": trade.txn if trade else (ours[5] if ours else None),
        "platform_status": ("paid" if trade.paid else "refund_only") if trade else None,
        "platform_amount_minor": trade.paid_minor if trade else None,
        "platform_refunded_minor": trade.refunded_minor if trade else None,
        "ordertally_state": ours[1] if ours else None,
        "ordertally_amount_minor": (ours[3] if ours[3] is not None else ours[2]) if ours else None,
        "ordertally_refunded_minor": ours[4] if ours else None,
        "order_no": ours[6] if ours else None,
        "applied": None,
    }


def _category(trade: Trade, mine: Sequence[Any] | None) -> str:
    """Where one statement trade lands, given our attempt (None: we have none)."""
    received = ("paid", "mismatch")
    if not trade.paid:
        # Only refund rows today (paid on an earlier day): we must know of that much refund.
        if mine is None or mine[1] not in received:
            return "status_mismatch"
        return "matched" if mine[4] >= trade.refunded_minor else "status_mismatch"
    if mine is None or mine[1] not in received:
        return "platform_only"
    amount = mine[3] if mine[3] is not None else mine[2]
    if mine[1] == "mismatch" or amount != trade.paid_minor:
        return "amount_mismatch"
    # Refunds made on later days show here but not on this bill: only "less than the platform
    # says" is a discrepancy.
    return "matched" if mine[4] >= trade.refunded_minor else "status_mismatch"


async def compare(
    session: AsyncSession, statement: Statement, *, keep_matched: bool = False
) -> Report:
    """Sort every trade of the statement and every payment we hold for its days.

    The bulk of a bill matches exactly: (amount, refunded) pairs of both sides are compared as
    sets (in C), and only the differences are looked at one by one.
    """
    provider = statement.provider
    trades = statement.trades
    window = statement.window()
    ours_paid = await repository.recon_paid_window(session, provider, *window) if window else {}
    platform_paid = {no: (t.paid_minor, t.refunded_minor) for no, t in trades.items() if t.paid}
    differing = {no for no, _ in platform_paid.items() - ours_paid.items()}
    differing.update(no for no, t in trades.items() if not t.paid)
    here_only = ours_paid.keys() - trades.keys()
    details: dict[str, Sequence[Any]] = {}
    if window:
        for row in await repository.recon_unsettled_window(session, provider, *window):
            details[row[0]] = row
            if row[0] not in trades:
                here_only.add(row[0])
    wanted = [no for no in differing | here_only if no not in details]
    for row in await repository.recon_lookup(session, provider, sorted(wanted)):
        details[row[0]] = row
    counts = dict.fromkeys(CATEGORIES, 0)
    counts["matched"] = len(platform_paid) - len(differing & platform_paid.keys())
    discrepancies: list[dict[str, Any]] = []
    late_matches: list[str] = []
    for no in sorted(differing):
        trade = trades[no]
        category = _category(trade, details.get(no))
        counts[category] += 1
        if category == "matched":
            late_matches.append(no)
        else:
            discrepancies.append(_row(category, no, trade, details.get(no)))
    for no in sorted(here_only):
        counts["ordertally_only"] += 1
        discrepancies.append(_row("ordertally_only", no, None, details.get(no)))
    discrepancies.sort(key=lambda d: (CATEGORIES.index(d["category"]), d["out_trade_no"]))
    matched: list[str] = []
    if keep_matched:
        matched = [no for no in platform_paid if no not in differing] + late_matches
    return Report(provider, statement.rows, counts, discrepancies, matched, window)


Confirmations = dict[str, tuple[Payment, QueryResult | Exception]]


async def confirm_platform_only(db: Database, report: Report) -> Confirmations:
    """Ask the platform itself about every platform-only trade we hold an attempt for: read the
    attempts in a short transaction, then query the providers with no transaction open (a
    statement file is only a claim; the signed query answer is the platform's word)."""
    wanted = [d["out_trade_no"] for d in report.discrepancies if d["category"] == "platform_only"]
    if not wanted:
        return {}
    async with db.transaction(write=False) as session:
        attempts = await repository.by_out_trade_nos(session, wanted)
    answers = await gateway.query_many(attempts)
    return {p.out_trade_no: (p, a) for p, a in zip(attempts, answers, strict=True)}


def _paid_at(moment: str) -> datetime:
    """A statement row's local time as UTC (now when the row's time cannot be read)."""
    try:
        local = datetime.strptime(moment.strip().lstrip("`")[:19], "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return clock.now()
    return local.replace(tzinfo=BEIJING).astimezone(UTC)


def _unconfirmed(answer: QueryResult | Exception) -> str:
    if isinstance(answer, QueryResult):
        return f"the platform's query says {answer.trade_state or answer.status}"
    return f"the platform could not be asked ({type(answer).__name__})"


async def apply_platform_only(
    session: AsyncSession,
    report: Report,
    statement: Statement,
    run_by: str,
    confirmations: Confirmations | None = None,
) -> None:
    """Act on each platform-only trade: pay the order only on the platform's signed query
    answer (the query is the evidence); otherwise open a manual-payment request in the
    uploader's name for the two-person flow. A trade we hold no attempt for goes through the
    inbox, which opens an unknown-trade case."""
    now = clock.now()
    confirmations = confirmations or {}
    for item in report.discrepancies:
        if item["category"] != "platform_only":
            continue
        trade = statement.trades[item["out_trade_no"]]
        confirmed = confirmations.get(item["out_trade_no"])
        if confirmed is not None:
            payment, answer = confirmed
            outcome = await compensation.record_query_result(session, payment, answer, now)
            if isinstance(answer, QueryResult) and answer.status == "paid":
                item["applied"] = outcome
                continue
            item["applied"] = await _request_manual(
                session, payment, trade, run_by, _unconfirmed(answer)
            )
            continue
        result = QueryResult(
            provider=statement.provider,
            out_trade_no=item["out_trade_no"],
            status="paid",
            trade_state="STATEMENT_SUCCESS",
            provider_txn_id=trade.txn or None,
            amount_minor=trade.paid_minor,
            raw=f"statement row reconciled by {run_by}",
        )
        notification_id = await inbox.store_notice(
            session,
            compensation.query_notice(result, source="statement"),
            source="statement",
            received_at=now,
            publish=False,
        )
        if notification_id is None:
            item["applied"] = "already_recorded"
            continue
        item["applied"] = await apply.apply_notification(session, notification_id)


async def _request_manual(
    session: AsyncSession, payment: Payment, trade: Trade, run_by: str, why: str
) -> str:
    """A statement row the platform did not confirm: a manual-payment request by the uploader."""
    try:
        manual = await manual_service.request_manual(
            session,
            payment.order_no,
            reference=f"statement:{trade.txn}"[:128],
            amount=money.from_minor(trade.paid_minor, payment.currency),
            paid_at=_paid_at(trade.paid_at),
            reason=f"statement row not confirmed by the platform: {why}"[:500],
            requested_by=run_by,
        )
    except OrdertallyError as exc:
        return f"not_applied:{exc.code}"
    return f"manual_requested:{manual.id}"


async def record(
    session: AsyncSession,
    report: Report,
    *,
    file_name: str,
    sha256: str,
    run_by: str,
    started_at: datetime,
) -> int:
    """Keep the run and its counts."""
    report.reconciliation_id = await repository.insert_reconciliation(
        session,
        {
            "provider": report.provider,
            "file_name": file_name[:255],
            "file_sha256": sha256,
            "window_from": report.window[0] if report.window else None,
            "window_to": report.window[1] if report.window else None,
            "rows": report.rows,
            "counts": report.counts,
            "run_by": run_by,
            "started_at": started_at,
            "finished_at": clock.now(),
        },
    )
    return report.reconciliation_id


def write_csv(report: Report, out: IO[str]) -> None:
    """Discrepancies (and matched trades, when kept) as CSV."""
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    # Trade numbers come from an uploaded file: every cell goes through the neutraliser.
    writer.writerows(safe_mapping(d) for d in report.discrepancies)
    for out_trade_no in report.matched:
        writer.writerow({"category": "matched", "out_trade_no": safe_cell(out_trade_no)})


def iter_csv(report: Report) -> Iterator[str]:
    """The CSV as text chunks."""
    buffer = io.StringIO()
    write_csv(report, buffer)
    yield buffer.getvalue()


async def run(
    db: Database,
    statement: Statement,
    *,
    file_name: str,
    sha256: str,
    run_by: str,
    keep_matched: bool = False,
    apply: bool = True,
) -> Report:
    """Compare (a read transaction), ask the platform about platform-only trades (no
    transaction open), then act on its answers and record the run (one write transaction).
    With apply=False nothing is written and nobody is asked."""
    started = clock.now()
    async with db.transaction(write=False) as session:
        report = await compare(session, statement, keep_matched=keep_matched)
    if apply:
        confirmations = await confirm_platform_only(db, report)
        async with db.transaction() as session:
            await apply_platform_only(session, report, statement, run_by, confirmations)
            await record(
                session,
                report,
                file_name=file_name,
                sha256=sha256,
                run_by=run_by,
                started_at=started,
            )
    return report


async def run_file(
    db: Database,
    provider: str,
    path: Path,
    *,
    run_by: str,
    keep_matched: bool = False,
    apply: bool = True,
) -> Report:
    """Reconcile a statement file (streamed from disk)."""
    with open_statement(path, provider) as stream:
        statement = parse(provider, stream)
    return await run(
        db,
        statement,
        file_name=path.name,
        sha256=file_sha256(path),
        run_by=run_by,
        keep_matched=keep_matched,
        apply=apply,
    )
