"""The drill's report: the JSON of the figures and a self-contained HTML page whose charts are
inline SVG drawn here (no script, no font, nothing loaded from another host)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

COLOURS = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")
W, H, PAD_L, PAD_B, PAD_T, PAD_R = 760, 220, 56, 28, 12, 150


def _nice(value: float) -> float:
    """A round axis maximum at or above `value`."""
    if value <= 0:
        return 1.0
    step = 10 ** (len(str(int(value))) - 1)
    for mult in (1, 2, 2.5, 5, 10):
        if value <= mult * step:
            return mult * step
    return 10.0 * step


def svg_chart(title: str, unit: str, series: dict[str, list[tuple[float, float]]]) -> str:
    """A line chart of named series of (x seconds, y) points, as an SVG element."""
    points = [p for s in series.values() for p in s]
    if not points:
        return f"<p><em>{html.escape(title)}: no data</em></p>"
    x_max = max(max(p[0] for p in points), 1.0)
    y_max = _nice(max(p[1] for p in points))
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B

    def xy(x: float, y: float) -> str:
        return f"{PAD_L + pw * x / x_max:.1f},{PAD_T + ph * (1 - min(y, y_max) / y_max):.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="{html.escape(title)}" font-family="sans-serif" font-size="11">',
        f'<rect x="{PAD_L}" y="{PAD_T}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#ccc"/>',
    ]
    for i in range(5):
        y = y_max * i / 4
        py = PAD_T + ph * (1 - i / 4)
        parts.append(
            f'<line x1="{PAD_L}" x2="{PAD_L + pw}" y1="{py:.1f}" y2="{py:.1f}" stroke="#eee"/>'
            f'<text x="{PAD_L - 4}" y="{py + 4:.1f}" text-anchor="end">{y:g}</text>'
        )
    for i in range(6):
        x = x_max * i / 5
        px = PAD_L + pw * i / 5
        parts.append(f'<text x="{px:.1f}" y="{H - 10}" text-anchor="middle">{x:.0f}s</text>')
    parts.append(f'<text x="6" y="{PAD_T + 10}" fill="#555">{html.escape(unit)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        colour = COLOURS[i % len(COLOURS)]
        if pts:
            path = " ".join(xy(x, y) for x, y in sorted(pts))
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{path}"/>'
            )
        ly = PAD_T + 14 * i + 10
        parts.append(
            f'<rect x="{W - PAD_R + 10}" y="{ly - 8}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{W - PAD_R + 24}" y="{ly + 1}">{html.escape(name)}</text>'
        )
    parts.append("</svg>")
    return f"<figure><figcaption>{html.escape(title)}</figcaption>{''.join(parts)}</figure>"


def _table(rows: list[list[Any]], head: list[str]) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _storage(storage: dict[str, Any] | None) -> str:
    if not storage or not storage.get("orders"):
        return "<p>not measured</p>"
    per_order = storage["bytes_per_order"]
    head = (
        f"<p>{storage['orders']:,} orders, {storage['total_bytes'] / 2**20:.1f} MiB in all tables"
        " and indexes"
        + (
            f": {per_order:,} bytes per order, {storage['gib_per_million_orders']} GiB per"
            " million orders.</p>"
            if per_order
            else " (too few orders to project per million).</p>"
        )
    )
    rows = [
        [name, t["rows"], round(t["total_bytes"] / 2**20, 2), round(t["index_bytes"] / 2**20, 2),
         t["mib_per_million_orders"] if t["mib_per_million_orders"] is not None else "—"]
        for name, t in storage["tables"].items()
    ]  # fmt: skip
    return head + _table(rows, ["table", "rows", "MiB", "of which indexes", "MiB per 1M orders"])


def render_html(doc: dict[str, Any]) -> str:
    """The whole report page."""
    ok = not doc["anomalies"]
    verdict = "clean: 0 anomalies" if ok else f"{len(doc['anomalies'])} anomalies"
    cfg = doc["config"]
    stages = doc["stages"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>ordertally drill x{cfg['speed']:g} {html.escape(doc['started_at'])}</title>",
        "<style>body{font-family:sans-serif;max-width:980px;margin:1em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;"
        "padding:2px 8px;text-align:right}th{background:#f3f3f3}"
        ".ok{color:#16a34a}.bad{color:#dc2626}figure{margin:1em 0}"
        "figcaption{font-weight:bold}</style></head><body>",
        f"<h1>Full-chain drill x{cfg['speed']:g} — "
        f"<span class='{'ok' if ok else 'bad'}'>{verdict}</span></h1>",
        f"<p>{html.escape(doc['started_at'])} · {cfg['duration']:g} s of load at "
        f"{cfg['offered_per_s']:.1f} orders/s offered · drained in {doc['drain_seconds']:.1f} s"
        f" · {html.escape(doc['machine'])}</p>",
        f"<p><code>{html.escape(doc['command'])}</code></p>",
        "<h2>Stages</h2>",
        _table(
            [
                [name, s["count"], s["per_s"], s["p50_ms"], s["p99_ms"], s["max_ms"]]
                for name, s in stages.items()
            ],
            ["stage", "count", "per s (load window)", "p50 ms", "p99 ms", "max ms"],
        ),
        "<h2>End state</h2>",
        _table(
            [
                [c["name"], "ok" if c["ok"] else "ANOMALY", json.dumps(c["detail"])[:200]]
                for c in doc["checks"]
            ],
            ["check", "result", "detail"],
        ),
        "<h2>Storage after the run, per million orders at this mix</h2>",
        _storage(doc.get("storage")),
        "<h2>CPU (% of one core, mean over the load window)</h2>",
        _table([[k, v] for k, v in doc["cpu_mean_percent"].items()], ["process", "%"]),
        "<h2>What the database's busy backends wait on (mean backends, during the load)</h2>",
        _table(
            [
                [w["process"], w["wait"], w.get("statement", ""), w["backends"]]
                for w in doc.get("db_waits", [])[:30]
            ],
            [
                "process",
                "state / wait",
                "statement (for idle in transaction: the last one)",
                "backends",
            ],
        ),
        "<h2>Over time</h2>",
        svg_chart(
            "Throughput per stage",
            "per s",
            {n: [(p["t"], p["n"]) for p in s["series"]] for n, s in stages.items()},
        ),
    ]
    for name, s in stages.items():
        if name == "tracking_push":
            continue
        parts.append(
            svg_chart(
                f"Latency: {name}",
                "ms",
                {
                    "p50": [(p["t"], p["p50"]) for p in s["series"] if p["n"]],
                    "p99": [(p["t"], p["p99"]) for p in s["series"] if p["n"]],
                },
            )
        )
    lag_keys = [k for k in (doc["lag"][0] if doc["lag"] else {}) if k != "t"]
    parts.append(
        svg_chart(
            "Queue and inbox lag (rows waiting)",
            "rows",
            {k: [(p["t"], p[k]) for p in doc["lag"]] for k in lag_keys},
        )
    )
    cpu_keys = sorted({k for p in doc["cpu"] for k in p if k != "t"})
    parts.append(
        svg_chart(
            "CPU per process",
            "% core",
            {k: [(p["t"], p.get(k, 0.0)) for p in doc["cpu"]] for k in cpu_keys},
        )
    )
    parts.append("<h2>Settings shortened for the drill</h2>")
    parts.append(_table([[k, v] for k, v in doc["settings"].items()], ["setting", "value"]))
    parts.append("</body></html>")
    return "\n".join(parts)


def write(doc: dict[str, Any], directories: list[Path]) -> list[Path]:
    """drill-<timestamp>.json and .html into each directory; the paths written."""
    stamp = doc["started_at"].replace(":", "").replace("-", "")[:15]
    written = []
    page = render_html(doc)
    for directory in directories:
        directory.mkdir(parents=True, exist_ok=True)
        base = f"drill-{stamp}-x{doc['config']['speed']:g}"
        (directory / f"{base}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
        (directory / f"{base}.html").write_text(page)
        written += [directory / f"{base}.json", directory / f"{base}.html"]
    return written
