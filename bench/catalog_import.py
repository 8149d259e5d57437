"""Catalogue import benchmark: `python -m bench.catalog_import [--skus N] [--format csv|xlsx]`.

Writes an N-SKU catalogue file (names in both languages, specs, valid EAN-13 barcodes,
weights, dimensions, a category, brand and prices; every 50th row a bundle of two earlier
SKUs) into a temp dir, creates and migrates a fresh SQLite database, then runs
`ordertally catalog import FILE` as a child process and times it (wall clock, including the
process start). The target of issue 22 is 100,000 SKUs in ≤ 60 s.
"""

from __future__ import annotations

import argparse
import base64
import csv
import os
import resource
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEADER = [
    "code", "name", "name_en", "spec", "barcode", "unit", "weight_g", "length_mm",
    "width_mm", "height_mm", "category", "brand", "cost", "min_price", "currency", "components",
]  # fmt: skip


def _ean13(n: int) -> str:
    body = f"69{n:010d}"
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str((10 - total % 10) % 10)


def rows(n: int) -> list[list[str]]:
    """The N data rows."""
    out = []
    for i in range(n):
        bundle = i % 50 == 49
        out.append(
            [
                f"SKU-{i:07d}",
                f"礼盒 {i}" if bundle else f"西湖龙井 {i % 500}g 第{i}号",
                f"Gift box {i}" if bundle else f"Longjing tea no. {i}",
                "" if bundle else f"净含量={i % 500}g;等级=特级",
                "" if bundle else _ean13(i),
                "盒" if bundle else "罐",
                str(100 + i % 900),
                "120",
                "80",
                "60",
                "",
                "狮峰",
                f"{10 + i % 90}.50",
                f"{20 + i % 90}.90",
                "CNY",
                f"SKU-{i - 1:07d}*1;SKU-{i - 2:07d}*2" if bundle else "",
            ]
        )
    return out


def write(path: Path, n: int) -> None:
    """The catalogue file, CSV or XLSX by its suffix."""
    data = rows(n)
    if path.suffix == ".xlsx":
        import xlsxwriter

        workbook = xlsxwriter.Workbook(str(path), {"constant_memory": True})
        sheet = workbook.add_worksheet("catalog")
        sheet.write_row(0, 0, HEADER)
        for r, row in enumerate(data, start=1):
            sheet.write_row(r, 0, row)
        workbook.close()
        return
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(HEADER)
        writer.writerows(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--skus", type=int, default=100_000)
    parser.add_argument("--format", choices=["csv", "xlsx"], default="csv")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="ordertally-bench-catalog-"))
    env = {
        **os.environ,
        "ORDERTALLY_DATA_DIR": str(base),
        "ORDERTALLY_PII_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "ORDERTALLY_DATABASE_URL": f"sqlite+aiosqlite:///{base / 'catalog.db'}",
    }
    os.environ.update(env)
    from ordertally.ops.migrations import upgrade

    upgrade(env["ORDERTALLY_DATABASE_URL"])
    source = base / f"catalog.{args.format}"
    started = time.perf_counter()
    write(source, args.skus)
    print(
        f"wrote {args.skus:,} SKUs ({source.stat().st_size / 1e6:.1f} MB {args.format}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "ordertally", "catalog", "import", str(source)],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(done.stdout.strip()[-500:] or done.stderr.strip()[-2000:])
    print(
        f"catalog import of {args.skus:,} SKUs on SQLite: {seconds:.1f} s, "
        f"{args.skus / seconds:,.0f} SKUs/s, import process CPU {cpu:.1f} s, load "
        f"{os.getloadavg()[0]:.1f} (exit {done.returncode}; target ≤ 60 s: "
        f"{'met' if seconds <= 60 and done.returncode == 0 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
