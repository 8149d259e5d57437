"""The CPU of an order's index tokens over its life: `python -m bench.search_tokens [--orders N]`.

N orders of the search generator's vocabulary (bench/search_data.py: buyers with common and
polyphonic surnames, mainland addresses with house numbers, products with brands and
categories) are tokenised three times, as the consumer indexes an order at each step: created
(pending payment), paid (its out_trade_no and transaction id), shipped (a waybill, warehouse
and carrier). Each step is one pass over every order, in one process, after one warm-up order
(the segmenter and pypinyin loaded). Reported: microseconds of process CPU per order per step.
No database: search/tokens.py's pure functions only (the row's text, `tokens_of`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import time
import warnings
from datetime import date, timedelta
from typing import Any

from bench.search_data import ADDRESSES, GIVEN, PRODUCTS, SURNAMES, _phone, catalogue_names

STEPS = ("created", "paid", "shipped")


def orders(count: int, seed: int) -> list[Any]:
    """Facts of `count` generated orders, as created (pending payment)."""
    from ordertally.search import tokens

    rng = random.Random(seed)
    found = []
    for i in range(count):
        name = rng.choice(SURNAMES) + "".join(
            rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2)))
        )
        phone = _phone(rng)
        province, city, districts, streets = rng.choice(ADDRESSES)
        line1 = f"{rng.choice(streets)}{rng.randrange(1, 999)}号"
        picked = rng.sample(PRODUCTS, rng.choice((1, 1, 2)))
        found.append(
            tokens.OrderFacts(
                order_no=f"OT260125{i:012d}",
                channel="wechat_mini",
                status="pending_payment",
                placed_on=date(2026, 1, 25) - timedelta(days=i % 700),
                names=(name,),
                phones=(f"+86{phone}",),
                address=(province, city, rng.choice(districts), line1),
                skus=tuple((code, title) for code, title, _ in picked),
                brands=tuple(b for code, _, _ in picked for b in catalogue_names(code)[0]),
                categories=tuple(
                    dict.fromkeys(c for code, _, _ in picked for c in catalogue_names(code)[1])
                ),
            )
        )
    return found


def step(facts: Any, name: str) -> Any:
    """The order's facts at a later step of its life."""
    if name == "created":
        return facts
    paid = dataclasses.replace(
        facts,
        status="paid",
        payment_ids=(f"{facts.order_no}P01", f"4200000{facts.order_no[-12:]}00000000"),
    )
    if name == "paid":
        return paid
    return dataclasses.replace(
        paid,
        status="shipped",
        waybills=(f"ZT{facts.order_no[-12:]}",),
        warehouses=("WH-SH",),
        carriers=("zhongtong",),
    )


def run(count: int, seed: int) -> dict[str, Any]:
    warnings.filterwarnings("ignore")
    from ordertally.search import tokens

    tokens.tokens_of(step(orders(1, seed + 1)[0], "shipped"))  # loads the segmenter, pypinyin
    made = orders(count, seed)
    per_step: dict[str, float] = {}
    for name in STEPS:
        moved = [step(f, name) for f in made]
        t0 = time.process_time()
        for facts in moved:
            tokens.tokens_of(facts)
        per_step[name] = round(1e6 * (time.process_time() - t0) / count, 1)
    return {"orders": count, "us_per_order": per_step, "load_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=2026)
    args = parser.parse_args()
    runs = [run(args.orders, args.seed + 10 * n) for n in range(args.runs)]
    for r in runs:
        print(json.dumps(r))
    print(
        "median",
        json.dumps({s: statistics.median(r["us_per_order"][s] for r in runs) for s in STEPS}),
    )


if __name__ == "__main__":
    main()
