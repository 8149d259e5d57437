"""Platform after-sale records mapped to cases: Shopify's refund (the `refunds/create`
webhook body, the Refund resource), Pinduoduo's `pdd.refund.list.increment.get` items and the
returns of Amazon's seller-fulfilled returns report (`GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE`,
a file uploaded or imported), as one `PlatformRecord` each, ingested once per platform refund
id (Amazon: the Amazon RMA ID).

Shopify's arrive through the channel webhook inbox (sealed there). Pinduoduo's items and
Amazon's returns (the report's rows of one RMA) are kept as the platform sent them in the
after-sales record inbox, sealed with AES-GCM bound to the
table and their (channel, refund id), and emptied once applied and past the inbox retention
period (ADR 0006, ADR 0030): a return's waybill and the buyer's words stay out of clear text.

A platform record is a fact, not a request: the platform has decided and refunded, so the
case is opened, approved and its refund recorded in one go (a return the platform accepted
then waits for its goods like any other)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.aftersales import batch, records, refunds, repository, service
from ordertally.aftersales.errors import AftersaleError, ReportRefused
from ordertally.aftersales.models import AftersalePlatformRecord
from ordertally.aftersales.state_machine import (
    MOVES_MONEY,
    OPEN,
    WITHDRAWABLE,
    CaseStatus,
    CaseType,
)
from ordertally.channels import service as channels_service
from ordertally.channels.adapters import amazon
from ordertally.core import clock, money
from ordertally.core.crypto import body_context, open_body, seal_body
from ordertally.core.settings import get_settings
from ordertally.orders import service as orders_service


@dataclass(frozen=True, slots=True)
class PlatformRecord:
    """One after-sale record in our terms."""

    channel: str
    platform_refund_id: str
    external_order_id: str
    type: CaseType
    amount_minor: int  # what the platform refunded (0: nothing yet, e.g. an exchange)
    reason_code: str
    skus: dict[str, int] = field(default_factory=dict)  # SKU -> units concerned
    # What the case refunds when it is more than what was refunded yet (a refund the platform
    # agreed and has not paid out); None: `amount_minor`.
    asked_minor: int | None = None
    # Douyin / JD / Taobao records: open | refunded | closed (`records`); None for the others.
    stage: str | None = None


def _minor(amount: Any, currency: str) -> int:
    return money.to_minor(Decimal(str(amount)), currency)


def from_shopify(refund: dict[str, Any], channel: str = "shopify") -> PlatformRecord:
    """Shopify's Refund resource (the refunds/create webhook body): refunded amount = the
    successful refund transactions; restocked items mean goods coming back."""
    amount = 0
    for t in refund.get("transactions") or []:
        if t.get("kind") == "refund" and t.get("status") == "success":
            amount += _minor(t["amount"], str(t.get("currency") or "USD"))
    skus: dict[str, int] = {}
    for item in refund.get("refund_line_items") or []:
        sku = str((item.get("line_item") or {}).get("sku") or "")
        if sku:
            skus[sku] = skus.get(sku, 0) + int(item.get("quantity") or 0)
    restocked = bool(refund.get("restock")) or any(
        item.get("restock_type") == "return" for item in refund.get("refund_line_items") or []
    )
    return PlatformRecord(
        channel=channel,
        platform_refund_id=str(refund["id"]),
        external_order_id=str(refund["order_id"]),
        type=CaseType.RETURN_REFUND if restocked and skus else CaseType.REFUND_ONLY,
        amount_minor=amount,
        reason_code="shopify:" + str(refund.get("note") or "refund")[:23],
        skus=skus if restocked else {},
    )


# pdd.refund.list.increment.get after_sales_type: 2 仅退款, 3 退货退款, 4 换货, 5 缺货补寄;
# refund_amount is a string in yuan ("退款金额（元）", response example "8.00"): the POP
# documentation of the API and an independent SDK's example (tests/aftersales/fixtures/SOURCES.md).
_PDD_TYPES = {
    2: CaseType.REFUND_ONLY,
    3: CaseType.RETURN_REFUND,
    4: CaseType.EXCHANGE,
    5: CaseType.RESHIP,
}


def from_pinduoduo(item: dict[str, Any], channel: str = "pinduoduo") -> PlatformRecord:
    """One item of pdd.refund.list.increment.get's refund_increment_get_response.refund_list."""
    case_type = _PDD_TYPES.get(int(item.get("after_sales_type") or 2), CaseType.REFUND_ONLY)
    sku = str(item.get("outer_id") or item.get("sku_id") or "")
    units = int(item.get("goods_number") or 1)
    return PlatformRecord(
        channel=channel,
        platform_refund_id=str(item["id"]),
        external_order_id=str(item["order_sn"]),
        type=case_type,
        amount_minor=_minor(item.get("refund_amount") or 0, "CNY")
        if case_type in (CaseType.REFUND_ONLY, CaseType.RETURN_REFUND)
        else 0,
        reason_code="pdd:" + str(item.get("after_sale_reason") or "refund")[:27],
        skus={sku: units} if sku and case_type != CaseType.REFUND_ONLY else {},
    )


# Amazon's seller-fulfilled returns report, tab-separated: the header row as Amazon's SP-API
# "Returns reports attributes" page lists it (tests/aftersales/fixtures/SOURCES.md). One row
# per returned item; the rows of one return share its Amazon RMA ID.
AMAZON_RETURNS_REPORT = amazon.RETURNS_REPORT
# What a row must carry to be a return of one of our orders.
AMAZON_RETURNS_REQUIRED = (
    "Order ID",
    "Return request status",
    "Amazon RMA ID",
    "Merchant SKU",
    "Return quantity",
)
# Requests Amazon (or the seller) has decided: the others (pending authorization, rejected...)
# are not facts and are left for a later report.
AMAZON_RETURN_DECIDED = frozenset({"approved", "completed"})


@dataclass(slots=True)
class AmazonReturns:
    """A returns report read: the rows by Amazon RMA ID, in file order, of the returns that
    are facts (decided and refunded, or replaced) and of those decided but not refunded yet."""

    rows: int = 0
    returns: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    not_refunded: dict[str, list[dict[str, str]]] = field(default_factory=dict)
    undecided: int = 0  # rows of requests not decided yet (skipped)
    unreadable: list[tuple[int, str]] = field(default_factory=list)  # (line, why)


def _settled(rows: list[dict[str, str]]) -> bool:
    """Whether Amazon has settled a decided return: money refunded on one of its rows (a
    value that does not read counts, so that its refusal says why), or the item replaced."""
    for row in rows:
        if "replacement" in (row.get("Resolution") or "").lower():
            return True
        value = row.get("Refunded Amount") or ""
        if value:
            try:
                if Decimal(value) > 0:
                    return True
            except ArithmeticError:
                return True
    return False


def read_amazon_returns(data: bytes) -> AmazonReturns:
    """Read a `GET_FLAT_FILE_RETURNS_DATA_BY_RETURN_DATE` document (UTF-8, or the Cp1252 some
    marketplaces send): rows by Amazon RMA ID. A return is a fact to apply once its request is
    decided (approved, completed) and Amazon refunded it or replaced the item; one decided but
    not refunded yet waits for a later report (the inbox keeps the first version it stores).
    A file whose header lacks the columns a return needs is refused whole
    (`aftersales.report_refused`); a row without an order or an RMA is reported by line and
    skipped. Short rows (Amazon leaves empty trailing cells out) read as empty; a cell of one
    space is empty."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252")
    lines = text.splitlines()
    header = [h.strip() for h in lines[0].split("\t")] if lines else []
    missing = [c for c in AMAZON_RETURNS_REQUIRED if c not in header]
    if missing:
        raise ReportRefused(
            f"not a {AMAZON_RETURNS_REPORT} report: no column {', '.join(missing)}",
            missing=missing,
        )
    report = AmazonReturns()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = [c.strip() for c in line.split("\t")]
        row = {h: (cells[i] if i < len(cells) else "") for i, h in enumerate(header) if h}
        report.rows += 1
        if not row["Order ID"] or not row["Amazon RMA ID"]:
            report.unreadable.append((number, "no Order ID or Amazon RMA ID"))
            continue
        if row["Return request status"].lower() not in AMAZON_RETURN_DECIDED:
            report.undecided += 1
            continue
        report.returns.setdefault(row["Amazon RMA ID"][:64], []).append(row)
    for rma in [rma for rma, rows in report.returns.items() if not _settled(rows)]:
        report.not_refunded[rma] = report.returns.pop(rma)
    return report


def from_amazon_return(rows: list[dict[str, str]], channel: str = "amazon") -> PlatformRecord:
    """One return of Amazon's returns report (its rows, one per item, share the RMA): the
    units per Merchant SKU come back; `Refunded Amount` (in `Currency code`) is what Amazon
    refunded, 0 while not refunded yet; a resolution that replaces the item is an exchange."""
    first = rows[0]
    currency = first.get("Currency code") or "USD"
    skus: dict[str, int] = {}
    amount = 0
    replaced = False
    for row in rows:
        units = int(row["Return quantity"] or 0)
        if units < 0:
            raise ValueError(f"negative Return quantity {units}")
        if row["Merchant SKU"]:
            skus[row["Merchant SKU"]] = skus.get(row["Merchant SKU"], 0) + units
        if row.get("Refunded Amount"):
            amount += _minor(row["Refunded Amount"], currency)
        replaced = replaced or "replacement" in (row.get("Resolution") or "").lower()
    return PlatformRecord(
        channel=channel,
        platform_refund_id=first["Amazon RMA ID"][:64],
        external_order_id=first["Order ID"],
        type=CaseType.EXCHANGE if replaced else CaseType.RETURN_REFUND,
        amount_minor=0 if replaced else amount,
        reason_code="amazon:" + (first.get("Return Reason") or "return")[:24],
        skus=skus,
    )


# What a record that does not map raises (a missing key, a bad number or amount).
_UNMAPPABLE = (KeyError, IndexError, TypeError, ValueError, ArithmeticError, money.MoneyError)


def from_listed(source: str, item: dict[str, Any], channel: str) -> PlatformRecord:
    """One record of Douyin's, JD's or Taobao's after-sale list (`source`: its API): open, its
    agreed amount asked and nothing refunded yet; refunded, that amount refunded; closed, no
    money."""
    mapped = records.MAPPERS[source](item)
    refunded = mapped.stage == records.REFUNDED and mapped.type in MOVES_MONEY
    asked = mapped.asked_minor if mapped.type in MOVES_MONEY else 0
    return PlatformRecord(
        channel=channel,
        platform_refund_id=mapped.platform_refund_id,
        external_order_id=mapped.external_order_id,
        type=mapped.type,
        amount_minor=asked if refunded else 0,
        reason_code=mapped.reason_code,
        skus=mapped.skus,
        asked_minor=asked,
        stage=mapped.stage,
    )


def _from_stored(body: str, channel: str) -> PlatformRecord:
    """A stored record mapped by what it is: an Amazon return (its report rows), a Douyin / JD
    / Taobao list record (kept with its API's name) or a Pinduoduo refund list item."""
    doc = orjson.loads(body)
    if isinstance(doc, dict) and doc.get("report") == AMAZON_RETURNS_REPORT:
        return from_amazon_return(doc["rows"], channel)
    if isinstance(doc, dict) and doc.get("source") in records.MAPPERS:
        return from_listed(doc["source"], doc["item"], channel)
    return from_pinduoduo(doc, channel)


@dataclass(slots=True)
class IngestResult:
    created: int = 0
    duplicates: int = 0
    unknown_order: int = 0
    advanced: int = 0  # records that moved a case they had opened (refunded, closed)
    undecided: int = 0  # records with nothing to act on yet (not stored)
    refused: list[tuple[str, str]] = field(default_factory=list)


# Records per batched page: the multi-row statements stay far below the drivers' parameter limits.
PAGE = 500


async def ingest(session: AsyncSession, records: list[PlatformRecord], actor: str) -> IngestResult:
    """Open, approve and (when money moved) refund a case per new record; a platform refund id
    already a case is a duplicate and changes nothing. Records of one channel per call.

    Pages of `PAGE` records go through the batched path (`batch.apply_page`, a fixed number of
    statements per page); a page another writer got into meanwhile is applied again record by
    record (`ingest_each`) from its savepoint."""
    result = IngestResult()
    for start in range(0, len(records), PAGE):
        page = records[start : start + PAGE]
        outcomes = await _apply_page(session, page, actor)
        result.duplicates += outcomes.repeats
        for pid, (outcome, reason) in outcomes.outcomes.items():
            _count(result, pid, outcome, reason)
    return result


async def _apply_page(
    session: AsyncSession, page: list[PlatformRecord], actor: str
) -> batch.PageResult:
    """One page through the batched path, or record by record when it met another writer."""
    try:
        async with session.begin_nested():
            return await batch.apply_page(session, page, actor)
    except (batch.PageConflict, IntegrityError):
        pass
    result = batch.PageResult()
    for record in page:
        pid = record.platform_refund_id
        if pid in result.outcomes:
            result.repeats += 1
            continue
        one = await ingest_each(session, [record], actor)
        if one.created:
            result.outcomes[pid] = (batch.CREATED, None)
        elif one.unknown_order:
            result.outcomes[pid] = (
                batch.UNKNOWN_ORDER,
                f"no {record.channel} order {record.external_order_id}",
            )
        elif one.refused:
            result.outcomes[pid] = (batch.REFUSED, one.refused[0][1])
        else:
            result.outcomes[pid] = (batch.DUPLICATE, None)
    return result


async def ingest_each(
    session: AsyncSession, records: list[PlatformRecord], actor: str
) -> IngestResult:
    """`ingest` record by record, each in a savepoint of its own through the case services
    (open → approve → record the platform refund): the fallback of a page that met another
    writer, and the reference the batched path is tested against."""
    result = IngestResult()
    if not records:
        return result
    channel = records[0].channel
    unique, result.duplicates = batch.by_refund_id(records)
    known = await repository.existing_platform_ids(session, channel, list(unique))
    result.duplicates += len(known)
    fresh = [r for pid, r in unique.items() if pid not in known]
    orders = await orders_service.by_external_ids(
        session, channel, sorted({r.external_order_id for r in fresh})
    )
    for record in fresh:
        found = orders.get(record.external_order_id)
        if found is None:
            result.unknown_order += 1
            continue
        try:
            async with session.begin_nested():
                await _apply(session, record, found[1], actor)
            result.created += 1
        except AftersaleError as exc:
            result.refused.append((record.platform_refund_id, exc.detail))
    return result


async def _apply(session: AsyncSession, record: PlatformRecord, order_no: str, actor: str) -> None:
    order = await orders_service.get_order(session, order_no)
    ordered = await orders_service.lines_of(session, order) if record.skus else []
    cmd = batch.case_command(record, order, ordered)
    case, created = await service.open_case(session, cmd, actor, channel=record.channel)
    if not created:
        return
    case = await service.approve(session, case.case_no, actor)
    if record.amount_minor > 0:
        await refunds.record_platform_refund(
            session, case.case_no, record.platform_refund_id, record.amount_minor, actor
        )


RECORD_TABLE = "aftersale_platform_record"


def _record_context(channel: str, platform_refund_id: str) -> str:
    return body_context(RECORD_TABLE, channel, platform_refund_id)


async def receive_pinduoduo(
    session: AsyncSession, items: list[dict[str, Any]], actor: str, channel: str = "pinduoduo"
) -> IngestResult:
    """Store each pdd.refund.list.increment.get item sealed in the after-sales inbox (a refund
    id stored before is a duplicate and changes nothing), then apply the new ones from what
    was stored, as batched pages; each stored row records what it came to (applied,
    unknown_order, refused). One statement stores the page, one marks it."""
    result = IngestResult()
    keyed: list[tuple[str, Any]] = []
    for item in items:
        platform_refund_id = str(item.get("id") or "")[:64]
        if not platform_refund_id:
            result.refused.append(("", "a refund item without an id"))
            continue
        keyed.append((platform_refund_id, item))
    await _receive(session, keyed, actor, channel, result)
    return result


async def receive_listed(
    session: AsyncSession,
    source: str,
    items: list[dict[str, Any]],
    actor: str,
    channel: str,
) -> IngestResult:
    """Store each record of a Douyin / JD / Taobao after-sale list (`source`: its API) sealed
    in the after-sales inbox under `<refund id>:<stage>` (a stage stored before is a duplicate
    and changes nothing; a record with nothing to act on yet is counted `undecided` and not
    stored; one without an id or with a status its platform's table does not know is refused
    and not stored), then apply the new ones as `receive_pinduoduo` does."""
    result = IngestResult()
    keyed: list[tuple[str, Any]] = []
    for item in items:
        try:
            pid, stage = records.key_of(source, item)
        except (ValueError, TypeError, AttributeError) as exc:
            result.refused.append((str(item.get("refund_id") or item.get("id") or ""), str(exc)))
            continue
        if stage is None:
            result.undecided += 1
            continue
        keyed.append((f"{pid}:{stage}", {"source": source, "item": item}))
    await _receive(session, keyed, actor, channel, result)
    return result


async def import_listed(
    session: AsyncSession, account: str, doc: Any, actor: str
) -> tuple[records.Page, IngestResult]:
    """A Douyin, JD or Taobao account's after-sale list answer (the API's JSON, uploaded or
    imported as a file) applied on the account's orders: the reader of the account's platform
    refuses a document that is not its answer (`aftersales.report_refused`, nothing stored)."""
    found = await channels_service.get_account(session, account)
    source = records.SOURCE_OF.get(found.platform)
    if source is None:
        raise ReportRefused(
            f"account {account} is a {found.platform} account; after-sale lists are read for "
            "douyin, jd and taobao accounts",
            account=account,
        )
    page = records.READERS[source](doc)
    return page, await receive_listed(session, source, page.items, actor, account)


def listed_doc(page: records.Page, result: IngestResult) -> dict[str, Any]:
    """What importing an after-sale list answer came to (the API's answer, the command's)."""
    return {
        "records": len(page.items),
        "total": page.total,
        "created": result.created,
        "advanced": result.advanced,
        "duplicates": result.duplicates,
        "undecided": result.undecided,
        "unknown_order": result.unknown_order,
        "refused": [{"refund_id": r, "message": m} for r, m in result.refused],
    }


async def receive_amazon_returns(
    session: AsyncSession, report: AmazonReturns, actor: str, channel: str
) -> IngestResult:
    """Store each decided return of an Amazon returns report (its rows) sealed in the
    after-sales inbox under its Amazon RMA ID (an RMA stored before, from this file or an
    earlier one, is a duplicate and changes nothing), then apply the new ones as
    `receive_pinduoduo` does."""
    result = IngestResult()
    keyed = [
        (rma, {"report": AMAZON_RETURNS_REPORT, "rows": rows})
        for rma, rows in report.returns.items()
    ]
    await _receive(session, keyed, actor, channel, result)
    return result


async def import_amazon_returns(
    session: AsyncSession, account: str, report: AmazonReturns, actor: str
) -> IngestResult:
    """An Amazon account's returns report (uploaded or imported as a file) applied: its
    decided returns stored and applied once each per Amazon RMA ID, on the account's orders
    (their channel is the account's code)."""
    found = await channels_service.get_account(session, account)
    if found.platform != "amazon":
        raise ReportRefused(
            f"account {account} is a {found.platform} account, not an Amazon one",
            account=account,
        )
    return await receive_amazon_returns(session, report, actor, account)


def amazon_import_doc(report: AmazonReturns, result: IngestResult) -> dict[str, Any]:
    """What importing a returns report came to (the API's answer, the command's output)."""
    return {
        "report": AMAZON_RETURNS_REPORT,
        "rows": report.rows,
        "returns": len(report.returns),
        "undecided_rows": report.undecided,
        "not_refunded": len(report.not_refunded),
        "unreadable_rows": [{"line": n, "message": m} for n, m in report.unreadable],
        "created": result.created,
        "duplicates": result.duplicates,
        "unknown_order": result.unknown_order,
        "refused": [{"rma": r, "message": m} for r, m in result.refused],
    }


async def _receive(
    session: AsyncSession,
    keyed: list[tuple[str, Any]],
    actor: str,
    channel: str,
    result: IngestResult,
) -> None:
    """Store records ((platform refund id, body) each) sealed, one statement, and apply the
    new ones as batched pages."""
    rows: dict[str, dict[str, Any]] = {}
    bodies: dict[str, str] = {}
    now = clock.now()
    for platform_refund_id, item in keyed:
        if platform_refund_id in rows:
            result.duplicates += 1
            continue
        raw = orjson.dumps(item).decode()
        bodies[platform_refund_id] = raw
        rows[platform_refund_id] = {
            "channel": channel,
            "platform_refund_id": platform_refund_id,
            "body": seal_body(raw, _record_context(channel, platform_refund_id)),
            "status": "pending",
            "received_at": now,
        }
    stored = await repository.store_records_many(session, list(rows.values()))
    result.duplicates += len(rows) - len(stored)
    await _apply_stored(
        session,
        [(record_id, channel, pid, bodies[pid]) for pid, record_id in stored.items()],
        actor,
        result,
    )


async def _apply_stored(
    session: AsyncSession,
    stored: list[tuple[int, str, str, str]],
    actor: str,
    result: IngestResult,
) -> None:
    """Apply stored records ((record id, channel, inbox key, body in clear) each) as batched
    pages per channel, and record on each row what it came to. A refund id's later stages
    (`records`) move the case its first one opened, each once (`_advance`)."""
    now = clock.now()
    marks: list[dict[str, Any]] = []
    by_channel: dict[str, list[tuple[int, PlatformRecord]]] = {}
    for record_id, channel, key, body in stored:
        try:
            record = _from_stored(body, channel)
        except _UNMAPPABLE as exc:
            result.refused.append((key, f"unmappable refund: {exc!r}"))
            marks.append(_mark(record_id, "refused", f"unmappable refund: {exc!r}", now))
            continue
        by_channel.setdefault(channel, []).append((record_id, record))
    for items in by_channel.values():
        # One record per refund id in the pages (its earliest stage); the later ones after.
        items.sort(key=lambda i: records.STAGE_ORDER.get(i[1].stage or "", 0))
        first: list[tuple[int, PlatformRecord]] = []
        later: list[tuple[int, PlatformRecord]] = []
        seen: set[str] = set()
        for item in items:
            pid = item[1].platform_refund_id
            # A closing record opens nothing: it only moves a case opened before.
            (later if pid in seen or item[1].stage == records.CLOSED else first).append(item)
            seen.add(pid)
        for start in range(0, len(first), PAGE):
            chunk = first[start : start + PAGE]
            page = await _apply_page(session, [r for _, r in chunk], actor)
            result.duplicates += page.repeats
            for record_id, record in chunk:
                outcome, reason = page.outcomes[record.platform_refund_id]
                if outcome == batch.DUPLICATE and record.stage in _ADVANCES:
                    later.append((record_id, record))
                    continue
                _count(result, record.platform_refund_id, outcome, reason)
                marks.append(_mark(record_id, _STATUS.get(outcome, outcome), reason, now))
        batched = await _refund_cases(session, later, actor) if BATCH_ADVANCES else {}
        for record_id, record in later:
            if record_id in batched:
                outcome, reason = batched[record_id]
            else:
                outcome, reason = await _advance(session, record, actor)
            if outcome == _ADVANCED:
                result.advanced += 1
            else:
                _count(result, record.platform_refund_id, outcome, reason)
            marks.append(_mark(record_id, _STATUS.get(outcome, outcome), reason, now))
    await repository.mark_records_many(session, marks)


_ADVANCED = "advanced"
_ADVANCES = frozenset({records.REFUNDED, records.CLOSED})
_STATUS = {batch.CREATED: "applied", batch.DUPLICATE: "applied", _ADVANCED: "applied"}


# Later "refunded" stages go through `batch.refund_cases` a page at a time (False: each
# through `_advance`, the reference the batched path is tested against).
BATCH_ADVANCES = True


async def _refund_cases(
    session: AsyncSession, later: list[tuple[int, PlatformRecord]], actor: str
) -> dict[int, tuple[str, str | None]]:
    """The later stages that record a refund covering their case's amount, applied as batched
    pages (`batch.refund_cases`); a page that met another writer is left to `_advance`.
    Outcomes by stored record id."""
    wanted = [(rid, r) for rid, r in later if r.stage == records.REFUNDED and r.amount_minor > 0]
    if not wanted:
        return {}
    channel = wanted[0][1].channel
    cases = await repository.cases_by_platform_refunds(
        session, channel, [r.platform_refund_id for _, r in wanted]
    )
    eligible = [
        (rid, r, cases[r.platform_refund_id])
        for rid, r in wanted
        if r.platform_refund_id in cases
        and CaseType(cases[r.platform_refund_id].type) in MOVES_MONEY
        and r.amount_minor >= cases[r.platform_refund_id].refund_minor
    ]
    out: dict[int, tuple[str, str | None]] = {}
    for start in range(0, len(eligible), PAGE):
        chunk = eligible[start : start + PAGE]
        try:
            async with session.begin_nested():
                page = await batch.refund_cases(
                    session, channel, [(r, case) for _, r, case in chunk], actor
                )
        except (batch.PageConflict, IntegrityError):
            continue
        for rid, r, _ in chunk:
            outcome, reason = page.outcomes[r.platform_refund_id]
            out[rid] = (_ADVANCED if outcome == batch.CREATED else outcome, reason)
    return out


async def _advance(
    session: AsyncSession, record: PlatformRecord, actor: str
) -> tuple[str, str | None]:
    """A later stage of a refund id that is a case already, in a savepoint of its own: the
    platform's refund recorded on the case (once: its refund number is unique) or the case
    closed through the case table. (outcome, reason)."""
    case = await repository.case_by_platform_refund(
        session, record.channel, record.platform_refund_id
    )
    if case is None:  # its first stage found no order, or was refused
        return await _apply_alone(session, record, actor)
    try:
        async with session.begin_nested():
            if record.stage == records.REFUNDED:
                if record.amount_minor <= 0:
                    return batch.DUPLICATE, None
                _, new = await refunds.record_platform_refund(
                    session, case.case_no, record.platform_refund_id, record.amount_minor, actor
                )
                return (_ADVANCED if new else batch.DUPLICATE), None
            if case.status not in OPEN:
                return batch.DUPLICATE, None
            if case.status in WITHDRAWABLE:  # the buyer withdrew before anything moved
                await service.withdraw(session, case.case_no, actor)
            else:
                await service.close(session, case.case_no, actor)
            return _ADVANCED, None
    except AftersaleError as exc:
        if record.stage == records.CLOSED and case.status != CaseStatus.CLOSED:
            reason = f"the platform closed it; case {case.case_no} is {case.status}: {exc.detail}"
            return batch.REFUSED, reason[:300]
        return batch.REFUSED, exc.detail


async def _apply_alone(
    session: AsyncSession, record: PlatformRecord, actor: str
) -> tuple[str, str | None]:
    """A record applied on its own page (its refund id has no case)."""
    if record.stage == records.CLOSED:
        return batch.DUPLICATE, None  # nothing was opened: nothing to close
    page = await _apply_page(session, [record], actor)
    return page.outcomes[record.platform_refund_id]


def _mark(record_id: int, status: str, outcome: str | None, at: datetime) -> dict[str, Any]:
    return {"rid": record_id, "status": status, "outcome": outcome and outcome[:300], "at": at}


def _count(result: IngestResult, pid: str, outcome: str, reason: str | None) -> None:
    """Add one refund id's outcome to the result."""
    if outcome == batch.CREATED:
        result.created += 1
    elif outcome == batch.DUPLICATE:
        result.duplicates += 1
    elif outcome == batch.UNKNOWN_ORDER:
        result.unknown_order += 1
    else:
        result.refused.append((pid, reason or ""))


async def stored_records(
    session: AsyncSession, statuses: tuple[str, ...], channel: str | None = None, limit: int = 200
) -> list[AftersalePlatformRecord]:
    """Stored platform records in these statuses, oldest first (bodies stay sealed)."""
    return await repository.records(session, statuses, channel, limit)


async def reapply_records(
    session: AsyncSession,
    actor: str,
    channel: str | None = None,
    limit: int = 200,
    *,
    statuses: tuple[str, ...] = ("unknown_order", "refused"),
    received_after: datetime | None = None,
) -> IngestResult:
    """Apply again, from their stored bodies, the records that found no order of ours or were
    refused (the order has arrived since, the cause is fixed); each row records its new
    outcome, and a refund id already a case stays a duplicate."""
    result = IngestResult()
    rows = await repository.records(session, statuses, channel, limit, received_after)
    stored = [
        (
            row.id,
            row.channel,
            row.platform_refund_id,
            open_body(row.body, _record_context(row.channel, row.platform_refund_id)),
        )
        for row in rows
    ]
    await _apply_stored(session, stored, actor, result)
    return result


async def purge_record_bodies(session: AsyncSession, now: datetime) -> int:
    """Empty the bodies of platform records applied more than the retention period ago (the
    dedupe key, status and times stay); returns how many."""
    cutoff = now - timedelta(days=get_settings().inbox_retention_days)
    return await repository.purge_record_bodies(session, cutoff)


async def apply_shopify_refund(
    session: AsyncSession, channel: str, body: dict[str, Any]
) -> str | None:
    """The channel inbox's handler of Shopify's refunds/create (`channel`: the account code,
    the channel of its orders): None when applied (or a duplicate), else why it was not."""
    try:
        record = from_shopify(body, channel)
    except (KeyError, TypeError, ValueError) as exc:
        return f"unmappable refund: {exc!r}"[:300]
    result = await ingest(session, [record], f"{channel}:webhook")
    if result.unknown_order:
        return f"no {channel} order {record.external_order_id}"
    if result.refused:
        return result.refused[0][1][:300]
    return None
