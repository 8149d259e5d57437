"""The end state, checked, and the server-side stages read back from the database.

A check is {"name", "ok", "detail"}; any check not ok is an anomaly and fails the run.
"""

from __future__ import annotations

from typing import Any

PAID_OR_LATER = ("paid", "allocated", "fulfilling", "shipped", "delivered", "completed")


# The storage figures: tables listed, and the run size from which they are projected.
TABLES_SHOWN = 20
PROJECT_FROM = 2000


def check(name: str, ok: bool, detail: Any) -> dict[str, Any]:
    return {"name": name, "ok": bool(ok), "detail": detail}


async def end_state(
    pool: Any,
    fates: dict[str, str],
    trades: dict[str, str],
    retried: dict[str, str],
    deliveries: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every order accounted for, every acknowledged callback applied exactly once, the queues
    empty, no dead letters, every paid order allocated with a waybill."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT o.order_no, o.status,"
            " (SELECT count(*) FROM order_event e"
            "   WHERE e.order_id = o.id AND e.to_status = 'paid') AS paid_events,"
            " (SELECT count(*) FROM shipment s WHERE s.order_id = o.id) AS shipments,"
            " (SELECT count(*) FROM shipment s"
            "   WHERE s.order_id = o.id AND s.waybill_no IS NOT NULL) AS waybills"
            " FROM sales_order o"
        )
        after_close = {
            r["out_trade_no"]
            for r in await conn.fetch(
                "SELECT out_trade_no FROM payment_notification WHERE outcome = 'paid_after_close'"
            )
        }
        outcomes = {
            f"{r['verification']}:{r['outcome']}": int(r["n"])
            for r in await conn.fetch(
                "SELECT verification, outcome, count(*) AS n FROM payment_notification"
                " GROUP BY verification, outcome"
            )
        }
        queues = dict(
            await conn.fetchrow(
                "SELECT"
                " (SELECT count(*) FROM outbox WHERE status = 'pending') AS outbox_pending,"
                " (SELECT count(*) FROM outbox WHERE status = 'dead') AS outbox_dead,"
                " (SELECT count(*) FROM dead_letter) AS dead_letters,"
                " (SELECT count(*) FROM payment_notification WHERE outcome = 'pending')"
                "   AS payment_inbox,"
                " (SELECT count(*) FROM channel_webhook WHERE status <> 'applied')"
                "   AS channel_webhooks,"
                " (SELECT count(*) FROM notification WHERE status IN ('failed', 'dead'))"
                "   AS notifications_failed,"
                " (SELECT count(*) FROM notification WHERE status = 'pending')"
                "   AS notifications_pending,"
                " (SELECT count(*) FROM notification WHERE status = 'sent') AS notifications_sent,"
                " (SELECT count(*) FROM tracking_event) AS tracking_events"
            )
        )
    by_no = {r["order_no"]: r for r in rows}
    trade_of = {order_no: trade for trade, order_no in trades.items()}
    wrong: list[Any] = []
    paid_twice: list[str] = []
    no_waybill: list[str] = []
    counts = {"paid": 0, "abandoned": 0, "late": 0}
    for order_no, fate in fates.items():
        row = by_no.get(order_no)
        counts[fate] += 1
        if row is None:
            wrong.append(f"{order_no}: missing")
            continue
        if row["paid_events"] > 1:
            paid_twice.append(order_no)
        if fate == "paid":
            if row["status"] not in PAID_OR_LATER or row["paid_events"] != 1:
                wrong.append(f"{order_no} ({fate}): {row['status']}")
            elif row["waybills"] < 1:
                no_waybill.append(order_no)
        elif row["status"] != "closed" or row["paid_events"] != 0:
            wrong.append(f"{order_no} ({fate}): {row['status']}")
        elif fate == "late" and trade_of.get(order_no) not in after_close:
            wrong.append(f"{order_no} (late): no paid_after_close notification")
    late_missing = [
        trade_of[no]
        for no, fate in fates.items()
        if fate == "late" and no in trade_of and trade_of[no] not in after_close
    ]
    if late_missing:
        # Why a late payment has no paid_after_close outcome: its attempt, its stored
        # notifications and what the simulator sent (read before the scratch database goes).
        async with pool.acquire() as conn:
            attempts = await conn.fetch(
                "SELECT out_trade_no, provider, state, deadline_at, next_query_at, query_count,"
                " last_query_at, last_query_state, created_at FROM payment"
                " WHERE out_trade_no = ANY($1::text[])",
                late_missing,
            )
            stored = await conn.fetch(
                "SELECT out_trade_no, source, verification, outcome, received_at"
                " FROM payment_notification WHERE out_trade_no = ANY($1::text[]) ORDER BY id",
                late_missing,
            )
        for n, order_no in enumerate(wrong):
            trade = trade_of.get(order_no.split(" ")[0], "")
            if trade in late_missing:
                wrong[n] = {
                    "order": order_no,
                    "attempt": {
                        k: str(v)
                        for r in attempts
                        if r["out_trade_no"] == trade
                        for k, v in dict(r).items()
                    },
                    "stored": [
                        {k: str(v) for k, v in dict(r).items()}
                        for r in stored
                        if r["out_trade_no"] == trade
                    ],
                    "sent": [
                        {k: d.get(k) for k in ("variant", "status", "success", "attempt")}
                        for d in deliveries
                        if d.get("out_trade_no") == trade
                    ],
                }
    strangers = sorted(set(by_no) - set(fates))
    retries_differ = {a: b for a, b in retried.items() if a != b}

    # A forged notification must never be acknowledged, nor a stale WeChat Pay one (outside
    # its signature window). Alipay's notify_time is not checked by default (it resends for
    # 25 hours); a stale Alipay copy is acknowledged and must change nothing (paid once).
    acked_wrongly = [
        {k: d.get(k) for k in ("provider", "out_trade_no", "variant", "status")}
        for d in deliveries
        if d["success"]
        and (d["variant"] == "forged" or (d["variant"] == "stale" and d["provider"] != "alipay"))
    ]
    acked_genuine = {
        d["out_trade_no"]
        for d in deliveries
        if d["variant"] in ("genuine", "duplicate") and d["success"]
    }
    not_applied = []
    for trade in acked_genuine:
        row = by_no.get(trades.get(trade) or "")
        if (
            row is None
            or (fates[row["order_no"]] == "paid" and row["paid_events"] != 1)
            or (fates[row["order_no"]] == "late" and trade not in after_close)
        ):
            not_applied.append(trade)
    return [
        check(
            "orders_accounted",
            not wrong and not strangers,
            {"by_fate": counts, "wrong": wrong[:20], "unexpected_orders": strangers[:20]},
        ),
        check("idempotent_retries", not retries_differ, {"retried": len(retried)}),
        check(
            "acknowledged_callbacks_applied_once",
            not not_applied and not paid_twice,
            {
                "acknowledged_trades": len(acked_genuine),
                "not_applied": not_applied[:20],
                "paid_twice": paid_twice[:20],
                "notifications": outcomes,
            },
        ),
        check(
            "forged_and_stale_refused",
            not acked_wrongly,
            {
                "sent": sum(d["variant"] in ("forged", "stale") for d in deliveries),
                "acknowledged": acked_wrongly[:10],
                "stale_alipay_acknowledged": sum(
                    d["variant"] == "stale" and d["provider"] == "alipay" and d["success"]
                    for d in deliveries
                ),
            },
        ),
        check(
            "paid_orders_allocated_with_waybill",
            not no_waybill,
            {"missing": no_waybill[:20], "why": await _why_unallocated(pool, no_waybill[:20])},
        ),
        check("payment_inbox_empty", queues["payment_inbox"] == 0, queues["payment_inbox"]),
        check("outbox_drained", queues["outbox_pending"] == 0, queues["outbox_pending"]),
        check(
            "no_dead_letters",
            queues["dead_letters"] == 0 and queues["outbox_dead"] == 0,
            {"dead_letter": queues["dead_letters"], "outbox_dead": queues["outbox_dead"]},
        ),
        check("channel_webhooks_applied", queues["channel_webhooks"] == 0, queues),
        check(
            "notifications_delivered",
            queues["notifications_failed"] == 0 and queues["notifications_pending"] == 0,
            {
                "sent": queues["notifications_sent"],
                "pending": queues["notifications_pending"],
                "failed_or_dead": queues["notifications_failed"],
            },
        ),
    ]


async def tracking(
    pool: Any, waybills: list[dict[str, Any]], pushes: list[dict[str, Any]]
) -> dict[str, Any]:
    """Every waybill the carrier finished ends in the carrier's true status here, and every
    signed push was acknowledged."""
    async with pool.acquire() as conn:
        ours = {
            r["waybill_no"]: r["status"]
            for r in await conn.fetch(
                "SELECT waybill_no, status FROM shipment WHERE waybill_no IS NOT NULL"
            )
        }
    done = [w for w in waybills if w["done"]]
    wrong = [
        f"{w['number']}: carrier {w['true_status']}, ours {ours.get(w['number'])}"
        for w in done
        if ours.get(w["number"]) != w["true_status"]
    ]
    refused = [p for p in pushes if not p["ok"]]
    return check(
        "tracking_matches_carrier",
        not wrong and not refused,
        {
            "waybills": len(waybills),
            "finished": len(done),
            "pushes": len(pushes),
            "pushes_refused": len(refused),
            "wrong": wrong[:10],
        },
    )


async def _why_unallocated(pool: Any, order_nos: list[str]) -> list[dict[str, Any]]:
    """For paid orders without a waybill: their channel, shipments and open exception cases."""
    if not order_nos:
        return []
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT o.order_no, o.channel, o.status,"
            " (SELECT string_agg(s.status, ',') FROM shipment s WHERE s.order_id = o.id)"
            "   AS shipments,"
            " (SELECT string_agg(c.type || ':' || c.status, ',') FROM exception_case c"
            "   WHERE c.order_id = o.id) AS cases"
            " FROM sales_order o WHERE o.order_no = ANY($1::text[])",
            order_nos,
        )
    return [dict(r) for r in rows]


async def late_allocations(pool: Any, after_seconds: float = 30.0) -> list[dict[str, Any]]:
    """Paid orders whose first shipment came more than `after_seconds` after they were paid
    (the allocation consumer passed them by and the minutely sweep, `allocate_waiting`, took
    them), grouped by channel, the events between paid and allocated, and their cases."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "WITH paid AS (SELECT order_id, min(occurred_at) AS at FROM order_event"
            "   WHERE to_status = 'paid' GROUP BY order_id),"
            " shipped AS (SELECT order_id, min(created_at) AS at FROM shipment GROUP BY order_id)"
            " SELECT o.channel,"
            " (SELECT string_agg(e.event, '>' ORDER BY e.version) FROM order_event e"
            "   WHERE e.order_id = o.id) AS events,"
            " (SELECT string_agg(DISTINCT c.type || ':' || c.status, ',') FROM exception_case c"
            "   WHERE c.order_id = o.id) AS cases,"
            " count(*) AS orders,"
            " round(avg(extract(epoch FROM s.at - p.at))::numeric, 1) AS mean_wait_s"
            " FROM sales_order o JOIN paid p ON p.order_id = o.id"
            " JOIN shipped s ON s.order_id = o.id"
            " WHERE s.at - p.at > make_interval(secs => $1)"
            " GROUP BY 1, 2, 3 ORDER BY 4 DESC LIMIT 20",
            after_seconds,
        )
    return [
        {**dict(r), "orders": int(r["orders"]), "mean_wait_s": float(r["mean_wait_s"])}
        for r in rows
    ]


def per_second(samples: list[tuple[float, float]]) -> list[dict[str, float]]:
    """(end time, latency) samples -> per second: count, p50 and p99 in ms."""
    buckets: dict[int, list[float]] = {}
    for ended, latency in samples:
        buckets.setdefault(int(ended), []).append(latency)
    out = []
    for second in range(min(buckets, default=0), max(buckets, default=-1) + 1):
        values = sorted(buckets.get(second, []))
        out.append(
            {
                "t": second,
                "n": len(values),
                "p50": round(1000 * percentile(values, 0.5), 2),
                "p99": round(1000 * percentile(values, 0.99), 2),
            }
        )
    return out


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (0 for an empty one)."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


# Server-side stages: (end, latency) pairs in epoch seconds from the database's own timestamps.
STAGE_SQL = {
    # A verified callback stored by the API until a worker applied it.
    "payment_apply": "SELECT extract(epoch FROM applied_at),"
    " extract(epoch FROM applied_at - received_at)"
    " FROM payment_notification"
    " WHERE verification = 'verified' AND applied_at IS NOT NULL AND source = 'callback'",
    # Paid until the fulfillment consumer planned (allocated) the shipment.
    "allocation": "SELECT extract(epoch FROM s.created_at),"
    " extract(epoch FROM s.created_at - e.occurred_at)"
    " FROM shipment s JOIN order_event e ON e.order_id = s.order_id AND e.to_status = 'paid'",
    # A signed tracking push from the carrier simulator stored (throughput only: the carrier's
    # step time is simulated).
    "tracking_push": "SELECT extract(epoch FROM received_at), 0 FROM tracking_event"
    " WHERE source = 'push'",
    # A signed Shopify webhook stored by the API until a worker applied it (made the order).
    "channel_webhook": "SELECT extract(epoch FROM applied_at),"
    " extract(epoch FROM applied_at - received_at)"
    " FROM channel_webhook WHERE applied_at IS NOT NULL",
    # A notification planned until the sink (SMS simulator, webhook receiver) took it.
    "notify": "SELECT extract(epoch FROM sent_at), extract(epoch FROM sent_at - created_at)"
    " FROM notification WHERE sent_at IS NOT NULL",
}


async def server_stages(pool: Any, start_epoch: float) -> dict[str, list[tuple[float, float]]]:
    """Each server-side stage's (seconds since the start, latency) samples."""
    out: dict[str, list[tuple[float, float]]] = {}
    async with pool.acquire() as conn:
        for name, sql in STAGE_SQL.items():
            rows = await conn.fetch(sql)
            out[name] = [(float(r[0]) - start_epoch, float(r[1])) for r in rows]
    return out


def server_histograms(text: str) -> dict[str, Any]:
    """The API's own view from its /metrics text: per route, requests, mean and the bucket
    holding p50 and p99 of `ordertally_http_request_duration_seconds` (server-side time, from
    the first middleware to the response), and the mean creation batch size (group commit)."""
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    batch = {"sum": 0.0, "count": 0.0}
    for line in text.splitlines():
        if line.startswith("ordertally_order_batch_size_sum"):
            batch["sum"] += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ordertally_order_batch_size_count"):
            batch["count"] += float(line.rsplit(" ", 1)[1])
        if not line.startswith("ordertally_http_request_duration_seconds"):
            continue
        name, _, value = line.rpartition(" ")
        labels = dict(
            part.split("=", 1) for part in name[name.index("{") + 1 : -1].split(",") if "=" in part
        )
        route = (
            f"{labels.get('method', '').strip(chr(34))} {labels.get('route', '').strip(chr(34))}"
        )
        if name.startswith("ordertally_http_request_duration_seconds_bucket"):
            le = labels["le"].strip('"')
            bound = float("inf") if le == "+Inf" else float(le)
            per = buckets.setdefault(route, {})
            per[bound] = per.get(bound, 0.0) + float(value)
        elif name.startswith("ordertally_http_request_duration_seconds_sum"):
            sums[route] = sums.get(route, 0.0) + float(value)
        elif name.startswith("ordertally_http_request_duration_seconds_count"):
            counts[route] = counts.get(route, 0.0) + float(value)

    def bucket_of(per: dict[float, float], total: float, q: float) -> float:
        for bound in sorted(per):
            if per[bound] >= q * total:
                return bound
        return float("inf")

    routes = {}
    for route, total in sorted(counts.items()):
        if total <= 0:
            continue
        per = buckets.get(route, {})
        routes[route] = {
            "count": int(total),
            "mean_ms": round(1000 * sums.get(route, 0.0) / total, 1),
            "p50_le_ms": 1000 * bucket_of(per, total, 0.5),
            "p99_le_ms": 1000 * bucket_of(per, total, 0.99),
        }
    mean_batch = batch["sum"] / batch["count"] if batch["count"] else None
    return {"routes": routes, "order_batch_size_mean": mean_batch}


async def storage(pool: Any) -> dict[str, Any]:
    """Table and index sizes after the run (PostgreSQL's own figures, VACUUM not forced) and,
    for a run of at least PROJECT_FROM orders, per million orders at this run's mix: what the
    chain writes per order, the machinery's tables (outbox, dedupe rows, inboxes, job runs)
    included. A short run is dominated by each table's first pages: no projection then."""
    async with pool.acquire() as conn:
        orders = int(await conn.fetchval("SELECT count(*) FROM sales_order"))
        rows = await conn.fetch(
            "SELECT c.relname AS name, pg_total_relation_size(c.oid) AS total,"
            " pg_indexes_size(c.oid) AS indexes"
            " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
            " ORDER BY pg_total_relation_size(c.oid) DESC"
        )
        counts = {
            r["name"]: int(await conn.fetchval(f'SELECT count(*) FROM "{r["name"]}"'))
            for r in rows[:TABLES_SHOWN]
        }
    scale = 1_000_000 / orders if orders >= PROJECT_FROM else None
    total = sum(int(r["total"]) for r in rows)
    return {
        "orders": orders,
        "total_bytes": total,
        "bytes_per_order": round(total / orders) if scale else None,
        "gib_per_million_orders": round(total * scale / 2**30, 2) if scale else None,
        "tables": {
            r["name"]: {
                "rows": counts[r["name"]],
                "total_bytes": int(r["total"]),
                "index_bytes": int(r["indexes"]),
                "mib_per_million_orders": (
                    round(int(r["total"]) * scale / 2**20, 1) if scale else None
                ),
            }
            for r in rows[:TABLES_SHOWN]
        },
    }


def pdd_pulled_once(sent: dict[str, float], pulled: list[str]) -> dict[str, Any]:
    """Every Pinduoduo order the simulator held was pulled into exactly one order (the sync
    re-reads its overlap each run: ingest must dedupe)."""
    missing = sorted(set(sent) - set(pulled))
    seen: set[str] = set()
    twice = sorted({e for e in pulled if e in seen or seen.add(e)})
    return check(
        "pinduoduo_orders_pulled_once",
        not missing and not twice,
        {"sent": len(sent), "orders": len(pulled), "missing": missing[:10], "twice": twice[:10]},
    )


async def rejected_report(
    client: Any, api_port: int, api_key: str, imports: list[dict[str, Any]]
) -> dict[int, str]:
    """Each import's rejected-rows CSV as the API serves it (masked), by import id."""
    out = {}
    for entry in imports:
        answer = await client.get(
            f"http://127.0.0.1:{api_port}/api/v1/channels/imports/{entry['id']}/rejected",
            headers={"Authorization": f"Bearer {api_key}"},
        )
        out[int(entry["id"])] = answer.text if answer.status_code == 200 else ""
    return out


def file_import(
    imports: list[dict[str, Any]],
    good: list[str],
    bad: dict[str, str],
    orders: dict[str, str],
    reports: dict[int, str],
) -> dict[str, Any]:
    """The uploaded file, row by row: every good row made exactly one order, every wrong row is
    in the rejected report with a reason and made none, and the same file uploaded again
    created nothing (every order a duplicate)."""
    first = next((i for i in imports if i["upload"] == "first"), None)
    again = next((i for i in imports if i["upload"] == "again"), None)
    problems: list[str] = []
    if first is None or again is None:
        problems.append(f"uploads answered: {[i['upload'] for i in imports]}")
    for entry in (first, again):
        if entry is None:
            continue
        label = entry["upload"]
        if entry.get("state") != "done":
            problems.append(f"{label}: state {entry.get('state')} ({entry.get('error')})")
        if entry.get("rows") != len(good) + len(bad):
            problems.append(f"{label}: {entry.get('rows')} rows read of {len(good) + len(bad)}")
        if entry.get("rejected_rows") != len(bad):
            problems.append(f"{label}: {entry.get('rejected_rows')} rejected of {len(bad)}")
        report = reports.get(int(entry["id"]), "")
        lines = report.splitlines()
        for number in bad:
            row = next((line for line in lines if number in line), None)
            if row is None:
                problems.append(f"{label}: wrong row {number} not in the rejected report")
        if len(lines) - 1 != len(bad):
            problems.append(f"{label}: the rejected report has {len(lines) - 1} rows")
    if first is not None and first.get("created") != len(good):
        problems.append(f"first: created {first.get('created')} of {len(good)}")
    if again is not None and (again.get("created"), again.get("duplicates")) != (0, len(good)):
        problems.append(
            f"again: created {again.get('created')}, duplicates {again.get('duplicates')}"
        )
    missing = [g for g in good if g not in orders]
    made_from_bad = [b for b in bad if b in orders]
    return check(
        "file_import_rows_accounted",
        not problems and not missing and not made_from_bad,
        {
            "good_rows": len(good),
            "wrong_rows": len(bad),
            "orders": len(orders),
            "imports": [
                {
                    k: i.get(k)
                    for k in ("upload", "state", "rows", "created", "duplicates", "rejected_rows")
                }
                for i in imports
            ],
            "problems": problems[:10],
            "missing": missing[:10],
            "made_from_wrong_rows": made_from_bad,
        },
    )
