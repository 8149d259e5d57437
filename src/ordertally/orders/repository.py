"""Every query of the orders domain."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.clock import as_utc
from ordertally.core.db import (
    Read,
    dialect_of,
    execute_driver_sql,
    insert_rows,
    read_together,
    scalar_defaults,
    table_of,
    unnest_args,
    unnest_insert,
)
from ordertally.orders.models import (
    FxRate,
    OrderEvent,
    OrderFingerprint,
    OrderLine,
    PiiAccess,
    SalesOrder,
    SavedView,
)


async def get_by_no(session: AsyncSession, order_no: str) -> SalesOrder | None:
    """One order by its number."""
    return await session.scalar(select(SalesOrder).where(SalesOrder.order_no == order_no))


async def get_by_id(session: AsyncSession, order_id: int) -> SalesOrder | None:
    """One order by id, read fresh from the database."""
    return await session.scalar(
        select(SalesOrder)
        .where(SalesOrder.id == order_id)
        .execution_options(populate_existing=True)
    )


async def get_by_external(
    session: AsyncSession, channel: str, external_id: str
) -> SalesOrder | None:
    """The order a channel already sent under this external id."""
    return await session.scalar(
        select(SalesOrder).where(
            SalesOrder.channel == channel, SalesOrder.external_id == external_id
        )
    )


async def find_recent_by_fingerprint(
    session: AsyncSession, fingerprint: str, since: datetime
) -> SalesOrder | None:
    """The newest order with the same fingerprint created since a moment."""
    newest = (
        select(OrderFingerprint.order_id)
        .where(OrderFingerprint.fingerprint == fingerprint, OrderFingerprint.created_at >= since)
        .order_by(OrderFingerprint.created_at.desc(), OrderFingerprint.order_id.desc())
        .limit(1)
        .scalar_subquery()
    )
    return await session.scalar(select(SalesOrder).where(SalesOrder.id == newest))


# Hot-path statements are built once (Core, on the tables) and executed with parameters, so
# SQLAlchemy reuses their compiled form instead of rebuilding them per order.
_ORDER = table_of(SalesOrder)
_LINE = table_of(OrderLine)
_INSERT_ORDER = insert(_ORDER).returning(_ORDER.c.id)
_INSERT_ORDERS = insert(_ORDER).returning(_ORDER.c.id, sort_by_parameter_order=True)
_INSERT_LINES = insert(_LINE).returning(_LINE.c.id, sort_by_parameter_order=True)
# SQLite runs RETURNING in parameter order row by row: there, plain multi-row INSERTs, and the
# ids are read back by natural key in one SELECT.
_INSERT_ORDERS_PLAIN = insert(_ORDER)
_INSERT_LINES_PLAIN = insert(_LINE)
_INSERT_EVENT = insert(table_of(OrderEvent))
_FINGERPRINT = table_of(OrderFingerprint)


async def insert_order(session: AsyncSession, values: dict[str, Any]) -> int:
    """Insert an order row; returns its id."""
    result = await session.execute(_INSERT_ORDER, values)
    return int(result.scalar_one())


async def insert_orders(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert many order rows in one multi-row INSERT; returns their ids in the given order."""
    if dialect_of(session) == "postgresql":
        result = await session.execute(_INSERT_ORDERS, rows)
        return [int(i) for i in result.scalars().all()]
    await session.execute(_INSERT_ORDERS_PLAIN, rows)
    found = await session.execute(
        select(_ORDER.c.order_no, _ORDER.c.id).where(
            _ORDER.c.order_no.in_([row["order_no"] for row in rows])
        )
    )
    ids = {order_no: int(order_id) for order_no, order_id in found.all()}
    return [ids[row["order_no"]] for row in rows]


_ORDERS_WITH_LINES: dict[tuple[tuple[str, ...], tuple[str, ...]], str] = {}


async def insert_orders_with_lines(
    session: AsyncSession, rows: list[dict[str, Any]], lines: list[list[dict[str, Any]]]
) -> tuple[list[int], list[list[int]]]:
    """Insert many orders and their lines (`lines[i]`: order i's line rows, without
    `order_id`); returns the orders' ids and each order's line ids, in the given order.

    PostgreSQL: one statement whatever the batch's size (the orders' INSERT in a CTE, the
    lines' INSERT joined to it by order number, both over `unnest` arrays: ADR 0055), instead
    of two multi-row INSERTs whose text, and plan, changed with every batch size. SQLite (or
    rows with a default computed per row): `insert_orders`, then `insert_lines`."""
    order_names = tuple(rows[0])
    line_names = tuple(lines[0][0]) if lines and lines[0] else ()
    fill_order = scalar_defaults(_ORDER, order_names)
    fill_line = scalar_defaults(_LINE, (*line_names, "order_id"))
    if (
        dialect_of(session) != "postgresql"
        or not line_names
        or fill_order is None
        or fill_line is None
        or any(tuple(row) != order_names for row in rows)
        or any(tuple(line) != line_names for order in lines for line in order)
    ):
        order_ids = await insert_orders(session, rows)
        line_rows = [
            {"order_id": order_id, **line}
            for order_id, order in zip(order_ids, lines, strict=True)
            for line in order
        ]
        written = iter(await insert_lines(session, line_rows))
        return order_ids, [[next(written) for _ in order] for order in lines]
    bind = session.bind
    assert bind is not None, "session is not bound"
    dialect = bind.dialect
    order_rows = [{**row, **fill_order} for row in rows] if fill_order else rows
    line_rows = [{**line, **fill_line} for order in lines for line in order]
    order_cols = list(order_rows[0])
    line_cols = list(line_rows[0]) if line_rows else list(line_names)
    key = (tuple(order_cols), tuple(line_cols))
    sql = _ORDERS_WITH_LINES.get(key)
    if sql is None:
        orders_sql = unnest_insert(dialect, _ORDER, order_cols, 1)
        last = len(order_cols) + len(line_cols) + 1  # the lines' order numbers
        lines_sql = unnest_insert(
            dialect,
            _LINE,
            line_cols,
            len(order_cols) + 1,
            keys=(f"CAST(${last} AS TEXT[])",),
            extra=("order_id", "o.id", "JOIN o ON o.order_no = u.k0"),
        )
        sql = _ORDERS_WITH_LINES[key] = (
            f"WITH o AS ({orders_sql} RETURNING id, order_no),"
            f" l AS ({lines_sql} RETURNING id, order_id, line_no)"
            " SELECT o.order_no, o.id, CAST(NULL AS INTEGER), CAST(NULL AS BIGINT) FROM o"
            " UNION ALL SELECT NULL, l.order_id, l.line_no, l.id FROM l"
        )
    args = [
        *unnest_args(dialect, _ORDER, order_cols, order_rows),
        *unnest_args(dialect, _LINE, line_cols, line_rows),
        [row["order_no"] for row, order in zip(rows, lines, strict=True) for _ in order],
    ]
    order_of: dict[str, int] = {}
    line_of: dict[tuple[int, int], int] = {}
    for order_no, order_id, line_no, line_id in (
        await execute_driver_sql(session, sql, args)
    ).all():
        if line_id is None:
            order_of[order_no] = int(order_id)
        else:
            line_of[(int(order_id), int(line_no))] = int(line_id)
    order_ids = [order_of[row["order_no"]] for row in rows]
    return order_ids, [
        [line_of[(order_id, line["line_no"])] for line in order]
        for order_id, order in zip(order_ids, lines, strict=True)
    ]


def new_ids(
    session: AsyncSession, orders: int, lines: int
) -> Read[tuple[list[int], list[int]] | None]:
    """Ids for up to `orders` new orders and `lines` new lines, drawn from their sequences as
    a `read_together` read (PostgreSQL; None elsewhere): rows inserted with them
    (`add_orders_with_lines`) need no RETURNING and can be folded into one statement with the
    rest of a batch (ADR 0057). An id drawn and not used is a gap, as a rolled-back INSERT's."""
    if dialect_of(session) != "postgresql" or not orders:
        return Read.known(None)

    def split(rows: list[Any]) -> tuple[list[int], list[int]]:
        return [i for kind, i in rows if kind == "o"], [i for kind, i in rows if kind == "l"]

    args: list[Any] = [orders, lines]

    async def alone() -> tuple[list[int], list[int]] | None:
        return split(list((await execute_driver_sql(session, _NEW_IDS, args)).all()))

    return Read(_NEW_IDS, args, split, alone)


_NEW_IDS = (
    "SELECT 'o', nextval(pg_get_serial_sequence('sales_order', 'id'))"
    " FROM generate_series(1, $1)"
    " UNION ALL SELECT 'l', nextval(pg_get_serial_sequence('order_line', 'id'))"
    " FROM generate_series(1, $2)"
)


async def add_orders_with_lines(
    session: AsyncSession,
    rows: list[dict[str, Any]],
    lines: list[list[dict[str, Any]]],
    order_ids: list[int],
    line_ids: list[list[int]],
) -> None:
    """Insert orders and their lines under ids drawn by `new_ids`: folded into the enclosing
    `folded_inserts` block's one statement (or at once)."""
    order_rows = [{"id": i, **row} for i, row in zip(order_ids, rows, strict=True)]
    line_rows = [
        {"id": line_id, "order_id": order_id, **line}
        for order_id, order, ids_of_lines in zip(order_ids, lines, line_ids, strict=True)
        for line, line_id in zip(order, ids_of_lines, strict=True)
    ]
    if line_rows and scalar_defaults(_LINE, tuple(line_rows[0])) is None:
        # The lines go at once: so must their orders, which they reference
        await session.execute(_INSERT_ORDERS_PLAIN, order_rows)
        await session.execute(_INSERT_LINES_PLAIN, line_rows)
        return
    await insert_rows(session, _ORDER, order_rows)
    await insert_rows(session, _LINE, line_rows)


async def by_external(
    session: AsyncSession, channel: str, external_ids: list[str]
) -> list[tuple[str, int, str]]:
    """(external id, id, order number) of a channel's orders with these external ids."""
    if not external_ids:
        return []
    rows = await session.execute(
        select(_ORDER.c.external_id, _ORDER.c.id, _ORDER.c.order_no).where(
            _ORDER.c.channel == channel, _ORDER.c.external_id.in_(external_ids)
        )
    )
    return [(str(e), int(i), str(n)) for e, i, n in rows.all()]


async def _pairs_present(
    session: AsyncSession, first: Any, second: Any, pairs: list[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which of the (first, second) value pairs a table holds: one query on both columns'
    values (an index on the pair serves it), narrowed to the exact pairs here."""
    if not pairs:
        return set()
    rows = await session.execute(
        select(first, second).where(
            first.in_(sorted({a for a, _ in pairs})), second.in_(sorted({b for _, b in pairs}))
        )
    )
    return {(a, b) for a, b in rows.all()} & set(pairs)


async def existing_externals(
    session: AsyncSession, pairs: list[tuple[str, str]]
) -> set[tuple[str, str]]:
    """Which (channel, external_id) pairs already have an order."""
    return await _pairs_present(session, _ORDER.c.channel, _ORDER.c.external_id, pairs)


def externals_read(
    session: AsyncSession, pairs: list[tuple[str, str]]
) -> Read[set[tuple[str, str]]]:
    """`existing_externals` as a `read_together` read (one statement text whatever the number
    of pairs; the (channel, external_id) index serves each)."""
    if not pairs:
        return Read.known(set())
    wanted = sorted(set(pairs))
    return Read(
        "SELECT t.c, t.e FROM unnest(CAST($1 AS text[]), CAST($2 AS text[])) AS t(c, e)"
        " WHERE EXISTS (SELECT FROM sales_order o WHERE o.channel = t.c AND o.external_id = t.e)",
        [[c for c, _ in wanted], [e for _, e in wanted]],
        lambda rows: {(c, e) for c, e in rows},
        lambda: existing_externals(session, wanted),
    )


_LOCK_FINGERPRINTS = (
    "SELECT pg_advisory_xact_lock(hashtextextended('order-fingerprint' || chr(31) || f, 0))"
    " FROM unnest(CAST($1 AS text[])) WITH ORDINALITY AS t(f, n) ORDER BY n"
)


async def lock_fingerprints(session: AsyncSession, fingerprints: list[str]) -> None:
    """PostgreSQL: wait for a transaction-scoped advisory lock on each duplicate fingerprint,
    in sorted order (no deadlocks), so a concurrent creation of the same order commits before
    this transaction reads recent fingerprints. SQLite's single writer already serialises."""
    await read_together(session, fingerprint_locks(session, fingerprints))


def fingerprint_locks(session: AsyncSession, fingerprints: list[str]) -> Read[None]:
    """`lock_fingerprints` as a `read_together` read. The recent fingerprints are read by a
    later statement: one that started before the locks were granted would not see the twin
    that held one (ADR 0025)."""
    if not fingerprints or dialect_of(session) != "postgresql":
        return Read.known(None)
    args = [sorted(set(fingerprints))]

    async def alone() -> None:
        await execute_driver_sql(session, _LOCK_FINGERPRINTS, args)

    return Read(_LOCK_FINGERPRINTS, args, lambda rows: None, alone)


async def recent_fingerprints(
    session: AsyncSession, fingerprints: list[str], since: datetime
) -> set[str]:
    """Which fingerprints an order created since a moment already has."""
    if not fingerprints:
        return set()
    wanted = sorted(set(fingerprints))
    rows = await session.execute(
        select(_FINGERPRINT.c.fingerprint)
        .where(_FINGERPRINT.c.fingerprint.in_(wanted), _FINGERPRINT.c.created_at >= since)
        .distinct()
    )
    return {f for (f,) in rows.all()}


def recent_fingerprints_read(
    session: AsyncSession, fingerprints: list[str], since: datetime
) -> Read[set[str]]:
    """`recent_fingerprints` as a `read_together` read: on PostgreSQL one statement text
    whatever the number of fingerprints (an IN list is a new one, prepared and planned again,
    for each number)."""
    if not fingerprints:
        return Read.known(set())
    wanted = sorted(set(fingerprints))
    return Read(
        "SELECT DISTINCT fingerprint FROM order_fingerprint"
        " WHERE fingerprint = ANY(CAST($1 AS text[])) AND created_at >= $2",
        [wanted, since],
        lambda rows: {f for (f,) in rows},
        lambda: recent_fingerprints(session, wanted, since),
    )


async def insert_fingerprints(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Record new orders' fingerprints (order_id, fingerprint, created_at) for the duplicate
    window: at once, or folded into the creation batch's one INSERT (ADR 0055)."""
    await insert_rows(session, _FINGERPRINT, rows)


async def purge_fingerprints(session: AsyncSession, before: datetime, limit: int) -> int:
    """Delete up to `limit` fingerprints of orders created before a moment, oldest first (the
    walk follows the created_at index)."""
    oldest = (
        select(_FINGERPRINT.c.order_id)
        .where(_FINGERPRINT.c.created_at < before)
        .order_by(_FINGERPRINT.c.created_at)
        .limit(limit)
    )
    result = await session.execute(
        delete(_FINGERPRINT).where(
            _FINGERPRINT.c.created_at < before, _FINGERPRINT.c.order_id.in_(oldest)
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def stale_fingerprints(session: AsyncSession, before: datetime, cap: int) -> int:
    """How many fingerprints of orders created before a moment are still kept (up to `cap`)."""
    kept = select(_FINGERPRINT.c.order_id).where(_FINGERPRINT.c.created_at < before).limit(cap)
    return int(await session.scalar(select(func.count()).select_from(kept.subquery())) or 0)


async def insert_lines(session: AsyncSession, rows: list[dict[str, Any]]) -> list[int]:
    """Insert order lines; returns their ids in the given order."""
    if dialect_of(session) == "postgresql" or len(rows) == 1:
        result = await session.execute(_INSERT_LINES, rows)
        return [int(i) for i in result.scalars().all()]
    await session.execute(_INSERT_LINES_PLAIN, rows)
    found = await session.execute(
        select(_LINE.c.order_id, _LINE.c.line_no, _LINE.c.id).where(
            _LINE.c.order_id.in_(sorted({row["order_id"] for row in rows}))
        )
    )
    ids = {(int(o), int(n)): int(i) for o, n, i in found.all()}
    return [ids[(row["order_id"], row["line_no"])] for row in rows]


async def lock_many(session: AsyncSession, order_ids: list[int]) -> list[SalesOrder]:
    """Orders by id, read fresh and row-locked on PostgreSQL, in id order (no deadlocks)."""
    stmt = (
        select(SalesOrder)
        .where(SalesOrder.id.in_(order_ids))
        .order_by(SalesOrder.id)
        .execution_options(populate_existing=True)
    )
    if dialect_of(session) == "postgresql":
        # NO KEY UPDATE: status changes never touch the key, so inserts of rows referencing
        # these orders (their KEY SHARE locks) need not wait for us, nor we for them.
        stmt = stmt.with_for_update(key_share=True)
    return list((await session.scalars(stmt)).all())


async def hold(session: AsyncSession, order_ids: list[int]) -> None:
    """Row-lock orders by id as `lock_many` locks them, in id order, without loading them (for
    writers of other domains that must hold the order but rarely change it)."""
    stmt = select(SalesOrder.id).where(SalesOrder.id.in_(order_ids)).order_by(SalesOrder.id)
    if dialect_of(session) == "postgresql":
        stmt = stmt.with_for_update(key_share=True)
    await session.execute(stmt)


async def set_status_many(
    session: AsyncSession, rows: list[dict[str, Any]], *, from_status: str, to_status: str
) -> None:
    """Compare-and-set of many locked orders: rows of {"oid", "seen"} (id, version read)."""
    await session.execute(
        update(table_of(SalesOrder))
        .where(
            SalesOrder.id == bindparam("oid"),
            SalesOrder.status == from_status,
            SalesOrder.version == bindparam("seen"),
        )
        .values(status=to_status, version=bindparam("seen") + 1, updated_at=bindparam("at")),
        rows,
    )


async def insert_events(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Append many audit rows."""
    await insert_rows(session, table_of(OrderEvent), rows)


async def lines_of_many(session: AsyncSession, order_ids: list[int]) -> list[OrderLine]:
    """Lines of many orders, by order then line number."""
    rows = await session.scalars(
        select(OrderLine)
        .where(OrderLine.order_id.in_(order_ids))
        .order_by(OrderLine.order_id, OrderLine.line_no)
    )
    return list(rows.all())


async def line_words_of_many(
    session: AsyncSession, order_ids: list[int]
) -> list[Row[int, str, str | None, str | None, str | None]]:
    """(order_id, sku, sku_name, sku_spec, sku_name_en) of the lines of many orders, by order
    then line number: plain rows, for readers that need only what a line is called."""
    connection = await session.connection()
    rows = await connection.execute(
        select(
            OrderLine.order_id,
            OrderLine.sku,
            OrderLine.sku_name,
            OrderLine.sku_spec,
            OrderLine.sku_name_en,
        )
        .where(OrderLine.order_id.in_(order_ids))
        .order_by(OrderLine.order_id, OrderLine.line_no)
    )
    return list(rows.all())


async def order_ids_with_skus(
    session: AsyncSession, codes: list[str], after_id: int, limit: int
) -> list[int]:
    """Ids above `after_id` of the orders with a line of one of these codes, ascending, at
    most `limit` (the codes in parts of 500, each answered from the line's sku index)."""
    found: set[int] = set()
    for start in range(0, len(codes), 500):
        part = codes[start : start + 500]
        rows = await session.scalars(
            select(OrderLine.order_id)
            .where(OrderLine.sku.in_(part), OrderLine.order_id > after_id)
            .group_by(OrderLine.order_id)
            .order_by(OrderLine.order_id)
            .limit(limit)
        )
        found.update(rows.all())
    return sorted(found)[:limit]


async def insert_event(session: AsyncSession, values: dict[str, Any]) -> None:
    """Append one audit row."""
    await session.execute(_INSERT_EVENT, values)


async def lines_of(session: AsyncSession, order_id: int) -> list[OrderLine]:
    """Lines of an order in line order."""
    rows = await session.scalars(
        select(OrderLine).where(OrderLine.order_id == order_id).order_by(OrderLine.line_no)
    )
    return list(rows.all())


async def events_of(session: AsyncSession, order_id: int) -> list[OrderEvent]:
    """The audit trail of an order, oldest first."""
    rows = await session.scalars(
        select(OrderEvent).where(OrderEvent.order_id == order_id).order_by(OrderEvent.version)
    )
    return list(rows.all())


async def compare_and_set_status(
    session: AsyncSession,
    order_id: int,
    *,
    from_status: str,
    version: int,
    to_status: str,
    at: datetime,
) -> bool:
    """Move an order from one status to another only if nobody moved it first."""
    result = await session.execute(
        update(table_of(SalesOrder))
        .where(
            SalesOrder.id == order_id,
            SalesOrder.status == from_status,
            SalesOrder.version == version,
        )
        .values(status=to_status, version=version + 1, updated_at=at)
    )
    return result.rowcount == 1  # type: ignore[attr-defined]


async def list_page(
    session: AsyncSession,
    *,
    status: str | None,
    channel: str | None,
    created_from: datetime | None,
    created_to: datetime | None,
    after: tuple[datetime, int] | None,
    limit: int,
    order_ids: list[int] | None = None,
    channels: tuple[str, ...] | None = None,
) -> list[SalesOrder]:
    """Orders newest first, after a keyset cursor (created_at, id); `channels`: only these
    channel accounts' (None: any)."""
    stmt = select(SalesOrder)
    if order_ids is not None:
        stmt = stmt.where(SalesOrder.id.in_(order_ids))
    if channels is not None:
        stmt = stmt.where(SalesOrder.channel.in_(list(channels)))
    if status:
        stmt = stmt.where(SalesOrder.status == status)
    if channel:
        stmt = stmt.where(SalesOrder.channel == channel)
    if created_from:
        stmt = stmt.where(SalesOrder.created_at >= created_from)
    if created_to:
        stmt = stmt.where(SalesOrder.created_at < created_to)
    if after:
        at, order_id = after
        stmt = stmt.where(
            or_(
                SalesOrder.created_at < at,
                and_(SalesOrder.created_at == at, SalesOrder.id < order_id),
            )
        )
    stmt = stmt.order_by(SalesOrder.created_at.desc(), SalesOrder.id.desc()).limit(limit)
    return list((await session.scalars(stmt)).all())


async def due_for_timeout(
    session: AsyncSession, now: datetime, limit: int, *, skip_locked: bool
) -> list[SalesOrder]:
    """Pending-payment orders past their deadline, oldest deadline first."""
    stmt = (
        select(SalesOrder)
        .where(SalesOrder.status == "pending_payment", SalesOrder.payment_deadline_at <= now)
        .order_by(SalesOrder.payment_deadline_at)
        .limit(limit)
    )
    if skip_locked:
        # FOR NO KEY UPDATE: rows that merely reference an order (cases, payments, shipments)
        # take KEY SHARE locks on it, which must not hide it from the close job.
        stmt = stmt.with_for_update(skip_locked=True, key_share=True)
    return list((await session.scalars(stmt)).all())


async def count_stuck_pending(session: AsyncSession, before: datetime) -> int:
    """Pending-payment orders whose deadline passed before a moment."""
    return int(
        await session.scalar(
            select(func.count()).where(
                SalesOrder.status == "pending_payment", SalesOrder.payment_deadline_at < before
            )
        )
        or 0
    )


async def count_orders(session: AsyncSession) -> int:
    """All orders."""
    return int(await session.scalar(select(func.count()).select_from(SalesOrder)) or 0)


async def status_counts(session: AsyncSession) -> dict[str, int]:
    """Orders per status."""
    rows = await session.execute(
        select(SalesOrder.status, func.count()).group_by(SalesOrder.status)
    )
    return {status: int(n) for status, n in rows.all()}


async def add_pii_access(session: AsyncSession, values: dict[str, Any]) -> None:
    """Log an unmasking."""
    await session.execute(insert(PiiAccess).values(**values))


# --- reads and writes other domains make through orders/queries.py --------------------------


async def get_many(session: AsyncSession, order_ids: list[int]) -> list[SalesOrder]:
    """Orders by id, in id order, without locks."""
    rows = await session.scalars(
        select(SalesOrder).where(SalesOrder.id.in_(order_ids)).order_by(SalesOrder.id)
    )
    return list(rows.all())


async def statuses_of(session: AsyncSession, order_ids: list[int]) -> dict[int, str]:
    """The current status of each of these orders (the ones that exist)."""
    rows = await session.execute(
        select(SalesOrder.id, SalesOrder.status).where(SalesOrder.id.in_(order_ids))
    )
    return {int(order_id): str(status) for order_id, status in rows.all()}


async def ids_in_status(
    session: AsyncSession, status: str, *, after_id: int, limit: int
) -> list[int]:
    """Ids of orders in a status, ascending from after `after_id`."""
    rows = await session.scalars(
        select(SalesOrder.id)
        .where(SalesOrder.status == status, SalesOrder.id > after_id)
        .order_by(SalesOrder.id)
        .limit(limit)
    )
    return [int(i) for i in rows.all()]


async def set_waybill_nos(
    session: AsyncSession, order_id: int, waybill_nos: str, at: datetime
) -> None:
    """Replace the order's list of waybill numbers (the search and export column)."""
    await session.execute(
        update(SalesOrder)
        .where(SalesOrder.id == order_id)
        .values(waybill_nos=waybill_nos, updated_at=at)
    )


async def set_waybill_nos_many(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """`set_waybill_nos` for many orders: rows of {"oid", "nos", "at"}, one executemany."""
    await session.execute(
        update(table_of(SalesOrder))
        .where(SalesOrder.id == bindparam("oid"))
        .values(waybill_nos=bindparam("nos"), updated_at=bindparam("at")),
        rows,
    )


async def created_per_minute(session: AsyncSession, since: datetime) -> dict[datetime, int]:
    """Orders created per UTC minute since a moment, counted in the database (the dashboard's
    throughput: an hour of a busy shop is tens of thousands of rows, never sent to Python)."""
    if dialect_of(session) == "postgresql":
        minute: Any = func.date_trunc("minute", SalesOrder.created_at)
    else:
        # SQLite keeps UTC as 'YYYY-MM-DD HH:MM:SS.ffffff' text: the minute is its first 16.
        minute = func.substr(SalesOrder.created_at, 1, 16)
    rows = await session.execute(
        select(minute, func.count()).where(SalesOrder.created_at >= since).group_by(minute)
    )
    out: dict[datetime, int] = {}
    for at, n in rows.all():
        moment = as_utc(datetime.fromisoformat(at) if isinstance(at, str) else at)
        out[moment.replace(second=0, microsecond=0)] = int(n)
    return out


def status_counts_since_statement(since: datetime) -> Select[str, int]:
    """The count of orders created since a moment per status: an index-only range scan of
    (created_at, status) on PostgreSQL (tests/orders/test_dashboard_plans.py checks the plan)."""
    return (
        select(SalesOrder.status, func.count())
        .where(SalesOrder.created_at >= since)
        .group_by(SalesOrder.status)
    )


async def status_counts_since(session: AsyncSession, since: datetime) -> dict[str, int]:
    """Orders created since a moment, per status."""
    rows = await session.execute(status_counts_since_statement(since))
    return {status: int(n) for status, n in rows.all()}


async def count_in_status_before(session: AsyncSession, status: str, before: datetime) -> int:
    """Orders in a status that were created before a moment."""
    stmt = select(func.count()).where(SalesOrder.status == status, SalesOrder.created_at < before)
    return int(await session.scalar(stmt) or 0)


# --- exchange rates -----------------------------------------------------------------------------


async def fx_rates_at(session: AsyncSession, base_currency: str, at: datetime) -> dict[str, str]:
    """The rate in force at `at` of every currency with a row, to `base_currency`."""
    newest = (
        select(FxRate.currency, func.max(FxRate.effective_from).label("since"))
        .where(FxRate.base_currency == base_currency, FxRate.effective_from <= at)
        .group_by(FxRate.currency)
        .subquery()
    )
    rows = await session.execute(
        select(FxRate.currency, FxRate.rate).join(
            newest,
            and_(
                FxRate.currency == newest.c.currency,
                FxRate.effective_from == newest.c.since,
                FxRate.base_currency == base_currency,
            ),
        )
    )
    return {currency: rate for currency, rate in rows.all()}


async def list_fx_rates(session: AsyncSession, base_currency: str) -> list[FxRate]:
    """Every rate row to `base_currency`, by currency then newest first."""
    result = await session.scalars(
        select(FxRate)
        .where(FxRate.base_currency == base_currency)
        .order_by(FxRate.currency, FxRate.effective_from.desc())
    )
    return list(result.all())


async def upsert_fx_rate(session: AsyncSession, row: dict[str, Any]) -> FxRate:
    """Write a rate row (a second write for the same pair and moment replaces its rate)."""
    existing = await session.scalar(
        select(FxRate).where(
            FxRate.currency == row["currency"],
            FxRate.base_currency == row["base_currency"],
            FxRate.effective_from == row["effective_from"],
        )
    )
    if existing is not None:
        existing.rate = row["rate"]
        existing.created_by = row["created_by"]
        existing.created_at = row["created_at"]
        await session.flush()
        return existing
    rate = FxRate(**row)
    session.add(rate)
    await session.flush()
    return rate


async def set_sub_status(
    session: AsyncSession, order_ids: list[int], value: str | None
) -> list[tuple[int, int, str]]:
    """Set orders' buyer-visible sub-status and bump their versions; returns (id, new version,
    status) of the orders that did not have that value already."""
    return await _set_many(session, order_ids, SalesOrder.sub_status, value)


async def set_remark(
    session: AsyncSession, order_ids: list[int], value: str | None
) -> list[tuple[int, int, str]]:
    """Set orders' seller remark (卖家备注) and bump their versions; returns (id, new version,
    status) of the orders that did not have that remark already."""
    return await _set_many(session, order_ids, SalesOrder.remark, value)


async def _set_many(
    session: AsyncSession, order_ids: list[int], column: Any, value: str | None
) -> list[tuple[int, int, str]]:
    if not order_ids:
        return []
    result = await session.execute(
        update(SalesOrder)
        .where(SalesOrder.id.in_(order_ids), column.is_distinct_from(value))
        .values({column.key: value, "version": SalesOrder.version + 1})
        .returning(SalesOrder.id, SalesOrder.version, SalesOrder.status)
    )
    return [(int(i), int(v), str(s)) for i, v, s in result.all()]


async def set_reviewed_fields(session: AsyncSession, order_id: int, values: dict[str, Any]) -> None:
    """Write what a reviewer edited (address columns, remark); the review transition bumped
    the version already."""
    await session.execute(update(SalesOrder).where(SalesOrder.id == order_id).values(**values))


async def set_personal(
    session: AsyncSession, order_id: int, values: dict[str, str]
) -> tuple[int, str] | None:
    """Replace an order's encrypted personal columns and bump its version; (new version,
    status), or None when there is no such order."""
    result = await session.execute(
        update(SalesOrder)
        .where(SalesOrder.id == order_id)
        .values(**values, version=SalesOrder.version + 1)
        .returning(SalesOrder.version, SalesOrder.status)
    )
    row = result.first()
    return (int(row[0]), str(row[1])) if row is not None else None


async def ids_after(session: AsyncSession, after_id: int, limit: int) -> list[SalesOrder]:
    """Orders with an id above `after_id`, lowest first (walking every order in chunks)."""
    stmt = select(SalesOrder).where(SalesOrder.id > after_id).order_by(SalesOrder.id).limit(limit)
    return list((await session.scalars(stmt)).all())


async def get_many_by_id(session: AsyncSession, order_ids: list[int]) -> list[SalesOrder]:
    """The orders with these ids, by id (unknown ids are simply absent)."""
    if not order_ids:
        return []
    stmt = select(SalesOrder).where(SalesOrder.id.in_(order_ids)).order_by(SalesOrder.id)
    return list((await session.scalars(stmt)).all())


async def get_many_by_no(session: AsyncSession, order_nos: list[str]) -> list[SalesOrder]:
    """The orders with these numbers, read fresh (unknown numbers are simply absent)."""
    if not order_nos:
        return []
    stmt = (
        select(SalesOrder)
        .where(SalesOrder.order_no.in_(order_nos))
        .execution_options(populate_existing=True)
    )
    return list((await session.scalars(stmt)).all())


async def delivered_before(
    session: AsyncSession, channel: str | None, before: datetime, exclude: list[str], limit: int
) -> list[str]:
    """Numbers of delivered orders last changed before `before` (the delivery), of one channel
    (or, with None, of every channel not in `exclude`), oldest first."""
    query = select(SalesOrder.order_no).where(
        SalesOrder.status == "delivered", SalesOrder.updated_at < before
    )
    if channel is not None:
        query = query.where(SalesOrder.channel == channel)
    elif exclude:
        query = query.where(SalesOrder.channel.not_in(exclude))
    rows = await session.scalars(query.order_by(SalesOrder.updated_at).limit(limit))
    return list(rows.all())


# --- saved views of the orders screen -----------------------------------------------------------


async def views_for(session: AsyncSession, owner: str) -> list[SavedView]:
    """The shared views and this user's own, shared first, by name."""
    rows = await session.scalars(
        select(SavedView)
        .where(or_(SavedView.shared.is_(True), SavedView.owner == owner))
        .order_by(SavedView.shared.desc(), SavedView.name, SavedView.id)
    )
    return list(rows.all())


async def count_views(session: AsyncSession, owner: str) -> int:
    """How many views one user saved."""
    return int(
        await session.scalar(
            select(func.count()).select_from(SavedView).where(SavedView.owner == owner)
        )
        or 0
    )


async def view_named(session: AsyncSession, owner: str, name: str) -> SavedView | None:
    """One user's view by name."""
    return await session.scalar(
        select(SavedView).where(SavedView.owner == owner, SavedView.name == name)
    )


async def get_view(session: AsyncSession, view_id: int) -> SavedView | None:
    """One saved view."""
    return await session.get(SavedView, view_id)


async def add_view(session: AsyncSession, values: dict[str, Any]) -> int:
    """Insert a saved view; returns its id."""
    result = await session.execute(insert(SavedView).values(**values).returning(SavedView.id))
    return int(result.scalar_one())


async def replace_view(session: AsyncSession, view_id: int, values: dict[str, Any]) -> None:
    """Overwrite a saved view's query (saving again under the same name)."""
    await session.execute(update(SavedView).where(SavedView.id == view_id).values(**values))


async def delete_view(session: AsyncSession, view_id: int) -> bool:
    """Delete a saved view; False when it was already gone."""
    result = await session.execute(delete(SavedView).where(SavedView.id == view_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]
