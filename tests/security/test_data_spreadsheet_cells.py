"""Issue 14 (Low): formula payloads are neutralised in every CSV the product writes (the
reconciliation report, the rejected-rows report of order files) by one function in core."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from ordertally.channels.files.parser import Rejected
from ordertally.channels.files.report import write_report
from ordertally.core.spreadsheet import safe_cell
from ordertally.payments import reconcile

PAYLOADS = ["+cmd|calc", "@SUM(1)", "=1+1", "-2+3", "\tcmd", "\r=1+1"]
NEUTRALISED = ["'+cmd|calc", "'@SUM(1)", "'=1+1", "'-2+3", "'\tcmd", "'\r=1+1"]


def test_the_neutraliser_prefixes_formula_starts_and_keeps_the_rest() -> None:
    assert [safe_cell(p) for p in PAYLOADS] == NEUTRALISED
    assert [safe_cell(v) for v in ("张三", "a=b", -5, None, "")] == ["张三", "a=b", -5, None, ""]


def test_the_reconciliation_report_neutralises_every_text_cell() -> None:
    # Given a report whose trade numbers and txn ids came from an uploaded bill
    report = reconcile.Report(
        provider="wechatpay",
        rows=len(PAYLOADS),
        counts={},
        discrepancies=[
            {"category": "platform_only", "out_trade_no": p, "provider_txn_id": p, "applied": p}
            for p in PAYLOADS
        ],
        matched=list(PAYLOADS),
    )
    # When it is written as CSV
    out = io.StringIO()
    reconcile.write_csv(report, out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue(), newline="")))
    # Then no cell starts like a formula
    assert [r["out_trade_no"] for r in rows] == NEUTRALISED + NEUTRALISED
    assert [r["provider_txn_id"] for r in rows[: len(PAYLOADS)]] == NEUTRALISED
    assert [r["applied"] for r in rows[: len(PAYLOADS)]] == NEUTRALISED


def test_the_rejected_rows_report_neutralises_every_text_cell(tmp_path: Path) -> None:
    # Given rejected rows of an order file carrying formula payloads in every text field
    rejected = [Rejected(i + 2, p, p, (p, "ok")) for i, p in enumerate(PAYLOADS)]
    out = tmp_path / "orders.rejected.csv"
    # When the report is written
    assert write_report(out, ["=HYPERLINK(1)", "name"], rejected) == len(PAYLOADS)
    rows = list(csv.reader(out.open(encoding="utf-8-sig", newline="")))
    # Then header and cells are text, the line numbers stay numbers
    assert rows[0][3:] == ["'=HYPERLINK(1)", "name"]
    assert [r[1:5] for r in rows[1:]] == [[n, n, n, "ok"] for n in NEUTRALISED]
    assert [r[0] for r in rows[1:]] == [str(i + 2) for i in range(len(PAYLOADS))]


@pytest.mark.parametrize("payload", PAYLOADS)
def test_no_writer_emits_a_raw_payload(payload: str) -> None:
    report = reconcile.Report("alipay", 1, {}, [{"out_trade_no": payload}])
    out = io.StringIO()
    reconcile.write_csv(report, out)
    cells = next(iter(csv.DictReader(io.StringIO(out.getvalue(), newline=""))))
    assert cells["out_trade_no"] == "'" + payload
