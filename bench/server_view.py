"""Where a created order waited, from the server's own histograms (`/metrics`, merged over the
API processes): a scrape before and after a run, and the difference summarised.

- `order_batch_queued`: from joining the creation queue until its batch started (per order);
- `order_batch`: a batch from its start until its COMMIT (per batch);
- `order_batch_size`: orders per batch;
- `event_loop_lag`: how late the loop woke a task asleep for 0.1 s (10 samples/s per process);
- `http_post_orders`: `POST /api/v1/orders` from the first middleware to the answer.
"""

from __future__ import annotations

import urllib.request
from typing import Any

HISTOGRAMS = {
    "order_batch_queued": ("ordertally_order_batch_queued_seconds", None),
    "order_batch": ("ordertally_order_batch_seconds", None),
    "order_batch_size": ("ordertally_order_batch_size", None),
    "event_loop_lag": ("ordertally_event_loop_lag_seconds", None),
    "http_post_orders": (
        "ordertally_http_request_duration_seconds",
        ('method="POST"', 'route="/api/v1/orders"'),
    ),
}
Histograms = dict[str, dict[str, Any]]


def scrape(port: int) -> Histograms:
    """The histograms above from the server's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return parse(response.read().decode())


def parse(text: str) -> Histograms:
    found: Histograms = {name: {"buckets": {}, "sum": 0.0, "count": 0.0} for name in HISTOGRAMS}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        for name, (metric, must) in HISTOGRAMS.items():
            if not line.startswith(metric + "_"):
                continue
            if must is not None and not all(part in line for part in must):
                continue
            key, _, value = line.rpartition(" ")
            kind = key[len(metric) + 1 :].split("{", 1)[0]
            into = found[name]
            if kind == "bucket":
                le = key.split('le="', 1)[1].split('"', 1)[0]
                bound = float("inf") if le == "+Inf" else float(le)
                into["buckets"][bound] = into["buckets"].get(bound, 0.0) + float(value)
            elif kind in ("sum", "count"):
                into[kind] += float(value)
    return found


def summary(before: Histograms, after: Histograms) -> dict[str, dict[str, float]]:
    """Per histogram over the run: count, mean, and p50/p90/p99 interpolated in their bucket
    (seconds shown as ms; batch size as orders)."""
    out: dict[str, dict[str, float]] = {}
    for name in HISTOGRAMS:
        a, b = after[name], before[name]
        count = a["count"] - b["count"]
        if count <= 0:
            continue
        scale = 1.0 if name == "order_batch_size" else 1000.0
        cumulative = sorted(
            (bound, a["buckets"][bound] - b["buckets"].get(bound, 0.0)) for bound in a["buckets"]
        )
        row = {"count": count, "mean": round((a["sum"] - b["sum"]) / count * scale, 3)}
        for q in (0.5, 0.9, 0.99):
            row[f"p{round(q * 100)}"] = round(_quantile(cumulative, count, q) * scale, 3)
        out[name] = row
    return out


def _quantile(cumulative: list[tuple[float, float]], total: float, q: float) -> float:
    lower, below = 0.0, 0.0
    for bound, upto in cumulative:
        if upto >= q * total:
            if bound == float("inf"):
                return lower
            inside = upto - below
            return lower + (bound - lower) * ((q * total - below) / inside if inside else 1.0)
        lower, below = bound, upto
    return lower
