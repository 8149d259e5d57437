"""Rules: what a compiled rule costs per order, and what 10 active rules cost order creation.
`python -m bench.rules [--db sqlite|pg|both] [--runs R] [--duration S] [--skip-http]`.

1. Evaluation: 10 order conditions (the built-in templates' and six like a merchant writes),
   each compiled once and evaluated over one order's facts, with `common-expression-language`
   (the Rust `cel` crate, what ordertally uses) and with pure-Python `cel-python`. Median of
   --runs runs of µs per evaluation over facts converted once, and apart the µs it takes to
   convert one order's facts (done once per order for all its rules, as the consumer does),
   and per condition what it costs alone on an order: converting only the fields it reads
   (`conditions.projection`) and evaluating.
2. Order creation, the hot-SKU bench (`python -m bench`'s load generator, closed loop) against
   `ordertally serve --no-worker` plus one `ordertally worker` process that consumes the
   events (customers, fulfillment, notify, rules...) on the same 2 cores, with the 10 rules
   disabled and enabled, runs interleaved (off, on, off, on, ...). Rules run in the worker,
   never in the request, so what they cost creation is the CPU and database time they take
   from it. The figure is the ratio of the medians (target: ≥ 0.80).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from bench.server import Process, Server, scratch_database

DEFAULT_PG_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"

TEMPLATES = (
    "builtin.amount_over_5x_average",
    "builtin.returns_over_3_in_30d",
    "builtin.discount_over_80",
    "builtin.same_item_burst",
)
CUSTOM = (
    "order.total_minor > 5000000",
    "order.quantity > 200 || order.line_count > 30",
    "order.province == '西藏自治区' && order.total_minor > 100000",
    "order.skus.exists(s, s in ['RECALLED-1', 'RECALLED-2'])",
    "lines.exists(l, l.unit_price_minor < 1)",
    "'blacklist' in customer.tags || customer.returns_30d > 10",
)


def conditions() -> list[str]:
    """The 10 conditions: the four order templates and six custom ones."""
    from ordertally.rules import templates

    return [templates.BY_CODE[c].condition for c in TEMPLATES] + list(CUSTOM)


def order_facts() -> dict[str, Any]:
    """One order's facts, as the consumer gathers them (a two-line order of a known buyer)."""
    from ordertally.rules.conditions import SAMPLE_FACTS

    facts = json.loads(json.dumps(SAMPLE_FACTS["order"]))
    facts["lines"].append(
        {"sku": "CUP-CER-01", "quantity": 1, "unit_price_minor": 3990, "amount_minor": 3990}
    )
    facts["customer"].update(orders_90d=4, aov_90d_minor=12000, risk_flags=[], tags=[])
    # Only the facts some condition names are gathered (here: order, lines, customer).
    return {k: facts[k] for k in ("order", "lines", "customer")}


def _time(fn: Any, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n * 1e6


def evaluation(runs: int) -> dict[str, Any]:
    """µs per evaluation per rule, both libraries (median of `runs`)."""
    import cel
    import celpy

    from ordertally.rules.conditions import compile_condition, prepare

    facts = order_facts()
    context = prepare(facts)
    env = celpy.Environment()
    activation = {k: celpy.json_to_cel(v) for k, v in facts.items()}
    out: dict[str, Any] = {"rules": []}
    for source in conditions():
        rust = cel.compile(source)
        py = env.program(env.compile(source))
        assert rust.execute(facts) == bool(py.evaluate(activation)), source
        rust_us = statistics.median(
            _time(lambda p=rust: p.execute(context), 20000) for _ in range(runs)
        )
        py_us = statistics.median(
            _time(lambda p=py: p.evaluate(activation), 500) for _ in range(runs)
        )
        # One rule alone on an order: its facts converted (only the fields it reads, as the
        # consumer does) and evaluated, each time.
        ours = compile_condition(source, "order.paid")
        alone_us = statistics.median(
            _time(lambda c=ours: c.matches(prepare(facts, c.reads)), 5000) for _ in range(runs)
        )
        out["rules"].append(
            {
                "condition": source,
                "cel_rust_us": rust_us,
                "cel_python_us": py_us,
                "alone_us": alone_us,
            }
        )
    out["cel_rust_median_us"] = statistics.median(r["cel_rust_us"] for r in out["rules"])
    out["cel_python_median_us"] = statistics.median(r["cel_python_us"] for r in out["rules"])
    out["cel_rust_max_us"] = max(r["cel_rust_us"] for r in out["rules"])
    out["alone_median_us"] = statistics.median(r["alone_us"] for r in out["rules"])
    out["alone_max_us"] = max(r["alone_us"] for r in out["rules"])
    # Converting one order's facts, once per order for all its rules (the dict as gathered).
    out["cel_rust_prepare_us"] = statistics.median(
        _time(lambda: prepare(facts), 2000) for _ in range(runs)
    )
    out["cel_python_prepare_us"] = statistics.median(
        _time(lambda: {k: celpy.json_to_cel(v) for k, v in facts.items()}, 500) for _ in range(runs)
    )
    return out


def _save_rules(server: Server) -> list[int]:
    from ordertally.rules import templates

    ids = []
    bodies = [
        {
            "code": code,
            "name": code,
            "trigger": "order.created",
            "condition": templates.BY_CODE[code].condition,
            "actions": [{"kind": "hold", "reason": "bench"}],
        }
        for code in TEMPLATES
    ] + [
        {
            "code": f"bench.custom-{i}",
            "name": f"bench {i}",
            "trigger": "order.created",
            "condition": source,
            "actions": [{"kind": "flag", "flag": "bench"}],
        }
        for i, source in enumerate(CUSTOM)
    ]
    for body in bodies:
        status, answer = server.request("POST", "/api/v1/rules", body)
        if status != 201:
            raise RuntimeError(f"saving a rule answered {status}: {answer}")
        ids.append(int(answer["id"]))
    return ids


def _toggle(server: Server, ids: list[int], enabled: bool) -> None:
    for rule_id in ids:
        status, answer = server.request("PATCH", f"/api/v1/rules/{rule_id}", {"enabled": enabled})
        if status != 200:
            raise RuntimeError(f"toggling rule {rule_id} answered {status}: {answer}")


def creation(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    """Closed-loop orders/s with the 10 rules off and on, interleaved."""
    from bench.__main__ import run_load

    load_args = argparse.Namespace(
        clients=args.clients,
        duration=args.duration,
        warmup=args.warmup,
        rate=500.0,
        bundle_share=0.0,
        quiet_wait=args.quiet_wait,
        max_background=20.0,
    )
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    with scratch_database(kind, args.pg_url, {}) as db, Server(db, 1) as server:
        server.seed_stock(16)
        ids = _save_rules(server)
        worker = Process(db, "worker", name="worker").start()
        try:
            for i in range(args.runs):
                for mode in ("off", "on"):
                    _toggle(server, ids, mode == "on")
                    load = os.getloadavg()[0]
                    result = run_load(server, "closed", load_args)
                    result["load_1m"] = load
                    runs[mode].append(result)
                    print(
                        f"  {kind} rules {mode:<3} run {i + 1}: "
                        f"{result['orders_per_s']:.1f} orders/s (load {load:.2f})",
                        file=sys.stderr,
                    )
                    if not worker.alive():
                        raise RuntimeError(f"the worker died:\n{worker.log_tail()}")
        finally:
            worker.stop()
    off = statistics.median(r["orders_per_s"] for r in runs["off"])
    on = statistics.median(r["orders_per_s"] for r in runs["on"])
    return {
        "off_orders_per_s": off,
        "on_orders_per_s": on,
        "ratio": on / off if off else None,
        "each": {m: [(r["orders_per_s"], r["load_1m"]) for r in rs] for m, rs in runs.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.rules", description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "pg", "both"], default="both")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--quiet-wait", type=float, default=10.0)
    parser.add_argument("--skip-http", action="store_true", help="evaluation figures only")
    parser.add_argument(
        "--pg-url", default=os.environ.get("ORDERTALLY_TEST_PG_URL") or DEFAULT_PG_URL
    )
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"load_1m_start": os.getloadavg()[0]}
    results["evaluation"] = evaluation(max(args.runs, 3))
    ev = results["evaluation"]
    print(
        f"evaluation: cel (Rust) median {ev['cel_rust_median_us']:.2f} µs, max "
        f"{ev['cel_rust_max_us']:.2f} µs, facts {ev['cel_rust_prepare_us']:.1f} µs/order, "
        f"one rule alone (its fields converted + evaluated) median {ev['alone_median_us']:.1f} "
        f"µs, max {ev['alone_max_us']:.1f} µs; "
        f"cel-python median {ev['cel_python_median_us']:.1f} µs, facts "
        f"{ev['cel_python_prepare_us']:.1f} µs/order",
        file=sys.stderr,
    )
    if not args.skip_http:
        for kind in ("sqlite", "pg") if args.db == "both" else (args.db,):
            results[kind] = creation(kind, args)
            print(
                f"{kind}: off {results[kind]['off_orders_per_s']:.1f}/s, on "
                f"{results[kind]['on_orders_per_s']:.1f}/s, ratio {results[kind]['ratio']:.2f}",
                file=sys.stderr,
            )
    results["load_1m_end"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
