"""What the rules on `order.paid` cost the payment transition now that they run in its
transaction: `python -m bench.paid_rules [--url URL] [--runs R] [--batches B] [--batch N]`.

Creates a scratch database (SQLite by default), migrates it and creates pending orders (setup,
not timed). Then times `orders.service.transition_many(..., "payment_succeeded", ...)` over
B transactions of N orders each (the payment apply's shape), in three modes interleaved per
run, each run starting with the next mode:

- `before`: no paid check registered: the payment path as it was (rules ran in a consumer);
- `no_rules`: the check registered, no `order.paid` rule enabled (one query per transaction);
- `rules`: the check registered with the `--rules` conditions below enabled (none matches,
  so what is measured is gathering the facts and evaluating, not writing holds).

Prints the median µs per paid order of each mode and the ratios to `before`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.seed import stocked_warehouse

CONDITIONS = (
    "order.total_minor > 5000000",
    "order.quantity > 200 || order.line_count > 30",
    "'blacklist' in customer.tags || customer.returns_30d > 10",
)
MODES = ("before", "no_rules", "rules")


def _env(url: str | None) -> str:
    tmp = tempfile.mkdtemp(prefix="ordertally-bench-paid-rules-")
    os.environ.setdefault("ORDERTALLY_DATA_DIR", tmp)
    os.environ.setdefault("ORDERTALLY_PII_KEY", base64.b64encode(secrets.token_bytes(32)).decode())
    url = url or f"sqlite+aiosqlite:///{Path(tmp) / 'bench.db'}"
    os.environ["ORDERTALLY_DATABASE_URL"] = url
    return url


async def _orders(db: Any, n: int) -> list[int]:
    from ordertally.orders import service as orders_service
    from ordertally.orders.schemas import OrderCreate
    from ordertally.orders.state_machine import Actor, ActorKind

    ids = []
    for i in range(n):
        cmd = OrderCreate.model_validate(
            {
                "channel": "wechat_mini",
                "customer": {"name": "张三", "phone": f"138{i % 10_000_000:08d}"},
                "shipping_address": {
                    "name": "李四",
                    "phone": "13987654321",
                    "province": "上海市",
                    "city": "上海市",
                    "district": "浦东新区",
                    "line1": "世纪大道1号",
                },
                "lines": [
                    {"sku": "TEA-LJ-250", "quantity": 2, "unit_price": "59.90"},
                    {"sku": "CUP-CER-01", "quantity": 1, "unit_price": "39.90"},
                ],
                "currency": "CNY",
            }
        )
        async with db.transaction() as session:
            snap, _ = await orders_service.create_order(
                session, cmd, Actor(ActorKind.API, "bench"), check_fingerprint=False
            )
            ids.append(snap.order.id)
    return ids


async def _run(url: str, args: argparse.Namespace) -> None:
    import ordertally.rules.consumers  # noqa: F401  (registers the paid check)
    from ordertally.core.db import Database
    from ordertally.orders import review
    from ordertally.orders import service as orders_service
    from ordertally.orders.state_machine import Actor, ActorKind
    from ordertally.rules import service as rules_service

    db = Database(url)
    checks = list(review.PAID_CHECKS)
    async with db.transaction() as session:
        await stocked_warehouse(session, ["TEA-LJ-250", "CUP-CER-01"])
        rule_ids = [
            (
                await rules_service.create_rule(
                    session,
                    code=f"bench.paid.{i}",
                    name=f"bench {i}",
                    trigger="order.paid",
                    condition=condition,
                    rule_actions=[{"kind": "hold", "reason": "bench"}],
                    enabled=False,
                    by="bench",
                )
            ).id
            for i, condition in enumerate(CONDITIONS)
        ]
    per_round = args.batch * args.batches
    started = time.perf_counter()
    pending = await _orders(db, per_round * len(MODES) * args.runs)
    setup = time.perf_counter() - started
    print(f"backend {db.dialect}; setup {len(pending)} orders in {setup:.0f} s")
    payer = Actor(ActorKind.PAYMENT_CALLBACK, "bench")
    timings: dict[str, list[float]] = {m: [] for m in MODES}
    for run in range(args.runs):
        # Each run starts with another mode, so no mode always follows the same one.
        for mode in MODES[run % len(MODES) :] + MODES[: run % len(MODES)]:
            review.PAID_CHECKS[:] = [] if mode == "before" else checks
            async with db.transaction() as session:
                for rule_id in rule_ids:
                    await rules_service.update_rule(
                        session, rule_id, {"enabled": mode == "rules"}, "bench"
                    )
            ids, pending = pending[:per_round], pending[per_round:]
            t = time.perf_counter()
            for start in range(0, len(ids), args.batch):
                chunk = ids[start : start + args.batch]
                async with db.transaction() as session:
                    moved = await orders_service.transition_many(
                        session, chunk, "payment_succeeded", {i: payer for i in chunk}
                    )
                assert len(moved) == len(chunk)
            us = (time.perf_counter() - t) / len(ids) * 1e6
            timings[mode].append(us)
            print(
                f"  run {run + 1} {mode:<8} {us:8.1f} µs/paid order (load {os.getloadavg()[0]:.2f})"
            )
    review.PAID_CHECKS[:] = checks
    medians = {m: statistics.median(v) for m, v in timings.items()}
    print(
        "median µs/paid order: "
        + ", ".join(f"{m} {v:.1f}" for m, v in medians.items())
        + f"; no_rules/before {medians['no_rules'] / medians['before']:.3f}"
        + f", rules/before {medians['rules'] / medians['before']:.3f}"
    )
    await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=50, help="orders per transaction")
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--url", default=None, help="database URL (default: scratch SQLite)")
    args = parser.parse_args()
    url = _env(args.url)
    from ordertally.ops.migrations import upgrade

    upgrade(url)
    asyncio.run(_run(url, args))


if __name__ == "__main__":
    main()
