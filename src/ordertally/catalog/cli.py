"""`ordertally catalog`: import and export the catalogue (CSV, XLSX) and add a SKU.

An import checks every row (code, names, barcode check digit, numbers, prices) and stores the
good rows in chunks (one transaction each, a multi-row INSERT per chunk): new codes are
created, known ones updated with a history row. Refused rows are written with their reasons to
`<file>.errors.csv` (or --errors). Exit codes: 0 every row stored; 1 the file could not be read;
2 some rows were refused.
"""

from __future__ import annotations

import asyncio
import csv
import re
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any

import typer

from ordertally.catalog.errors import InvalidBarcode
from ordertally.catalog.service import check_barcode
from ordertally.core.db import Database

EXIT_OK, EXIT_BAD_FILE, EXIT_REFUSED = 0, 1, 2
CHUNK = 5000
CODE = re.compile(r"^[A-Za-z0-9._/-]{1,64}$")

# Column -> accepted header names (English as exported, Chinese as merchants write them).
COLUMNS: dict[str, tuple[str, ...]] = {
    "code": ("code", "编码", "商品编码", "sku"),
    "name": ("name", "名称", "商品名称"),
    "name_en": ("name_en", "英文名称"),
    "spec": ("spec", "规格"),
    "barcode": ("barcode", "条码", "条形码"),
    "unit": ("unit", "单位"),
    "weight_g": ("weight_g", "重量(g)", "重量"),
    "length_mm": ("length_mm", "长(mm)"),
    "width_mm": ("width_mm", "宽(mm)"),
    "height_mm": ("height_mm", "高(mm)"),
    "category": ("category", "类目", "分类"),
    "brand": ("brand", "品牌"),
    "brand_en": ("brand_en", "英文品牌"),
    "cost": ("cost", "成本价"),
    "min_price": ("min_price", "最低售价"),
    "currency": ("currency", "币种"),
    "image_ref": ("image_ref", "图片"),
    "active": ("active", "启用"),
    "components": ("components", "组件"),
}
HEADER = list(COLUMNS)
INTS = ("weight_g", "length_mm", "width_mm", "height_mm")


class FileRefused(Exception):
    """The file cannot be imported at all (exit 1)."""


def _rows(path: Path) -> tuple[Any, int | None]:
    """(line number, cells) of each row, the header first, and the data rows expected."""
    if not path.is_file():
        raise FileRefused(f"文件不存在 / no such file: {path.name}")
    if path.suffix.lower() in (".xlsx", ".xlsm"):
        from python_calamine import CalamineError, CalamineWorkbook

        try:
            workbook = CalamineWorkbook.from_path(str(path))
            sheet = workbook.get_sheet_by_index(0)
        except (CalamineError, OSError, ValueError) as exc:
            raise FileRefused(f"无法读取 XLSX / cannot read the XLSX file: {exc}") from exc
        return (
            (
                (n, ["" if c is None else str(c) for c in row])
                for n, row in enumerate(sheet.iter_rows(), start=1)
            ),
            max(sheet.height - 1, 0),
        )
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise FileRefused("无法识别编码 / neither UTF-8 nor GB18030")
    lines = text.splitlines()
    return enumerate(csv.reader(lines), start=1), max(len(lines) - 1, 0)


def _minor(text: str, currency: str) -> int:
    amount = Decimal(text)
    if amount < 0 or amount.as_tuple().exponent < -2:  # type: ignore[operator]
        raise ValueError(f"price {text} must be ≥ 0 with at most 2 decimals")
    return int(amount * 100) if currency not in ("JPY", "KRW") else int(amount)


def check_row(cells: dict[str, str]) -> dict[str, Any]:
    """One row's values for `import_rows`, or ValueError with the reason (both languages)."""
    code = cells.get("code", "").strip()
    if not CODE.match(code):
        raise ValueError(f"编码无效 / invalid code {code!r}")
    values: dict[str, Any] = {"code": code}
    name = cells.get("name", "").strip()
    if not name or len(name) > 200:
        raise ValueError("名称必填，最多200字 / name is required (at most 200 characters)")
    values["name"] = name
    for key in ("name_en", "unit", "brand", "brand_en", "image_ref"):
        if cells.get(key, "").strip():
            values[key] = cells[key].strip()
    if cells.get("spec", "").strip():
        spec = cells["spec"].strip()[:200]
        values["spec_text"] = spec
        pairs = [p.split("=", 1) for p in re.split(r"[;；]", spec) if "=" in p]
        values["spec"] = {k.strip(): v.strip() for k, v in pairs} or {"spec": spec}
    if cells.get("barcode", "").strip():
        try:
            values["barcode"] = check_barcode(cells["barcode"].strip())
        except InvalidBarcode as exc:
            raise ValueError(exc.detail) from exc
    for key in INTS:
        if cells.get(key, "").strip():
            try:
                number = int(Decimal(cells[key].strip()))
            except InvalidOperation as exc:
                raise ValueError(f"{key} 必须是数字 / must be a number") from exc
            if number < 0:
                raise ValueError(f"{key} 不能为负 / cannot be negative")
            values[key] = number
    currency = (cells.get("currency", "").strip() or "CNY").upper()
    for key, column in (("cost", "cost_minor"), ("min_price", "min_price_minor")):
        if cells.get(key, "").strip():
            try:
                values[column] = _minor(cells[key].strip(), currency)
            except (InvalidOperation, ValueError) as exc:
                raise ValueError(f"{key}: 价格无效 / invalid price {cells[key]!r}") from exc
            values["currency"] = currency
    if cells.get("category", "").strip():
        values["category"] = cells["category"].strip()
    if cells.get("active", "").strip():
        values["active"] = cells["active"].strip().lower() not in ("0", "false", "no", "否", "停用")
    if cells.get("components", "").strip():
        components = []
        for part in re.split(r"[;；]", cells["components"].strip()):
            sku, _, qty = part.strip().partition("*")
            if not CODE.match(sku.strip()) or not qty.strip().isdigit() or int(qty) <= 0:
                raise ValueError(f"组件格式为 编码*数量;… / components are CODE*QTY;… ({part!r})")
            components.append({"sku": sku.strip(), "quantity": int(qty)})
        values["components"] = components
    return values


async def import_file(
    db: Database, path: Path, errors: Path | None, actor: str, progress: Any = None
) -> dict[str, Any]:
    """Import a catalogue file; returns the summary (counts, refused rows, report path)."""
    from ordertally.catalog import service

    started = time.perf_counter()
    rows, expected = _rows(path)
    header: dict[int, str] | None = None
    summary: dict[str, Any] = {"rows": 0, "created": 0, "updated": 0, "unchanged": 0}
    refused: list[tuple[int, str, str]] = []
    chunk: list[tuple[int, dict[str, Any]]] = []
    seen: set[str] = set()

    async def flush() -> None:
        if not chunk:
            return
        async with db.transaction() as session:
            outcome = await service.import_rows(session, chunk, actor)
        summary["created"] += outcome.created
        summary["updated"] += outcome.updated
        summary["unchanged"] += outcome.unchanged
        refused.extend(outcome.refused or [])
        chunk.clear()

    for line, cells in rows:
        if header is None:
            names = {
                alias.strip().lower(): key for key, aliases in COLUMNS.items() for alias in aliases
            }
            header = {
                i: names[c.strip().lower()]
                for i, c in enumerate(cells)
                if c.strip().lower() in names
            }
            if "code" not in header.values() or "name" not in header.values():
                raise FileRefused("缺少 编码/名称 列 / the code and name columns are required")
            continue
        if not any(c.strip() for c in cells):
            continue
        summary["rows"] += 1
        named = {key: (cells[i] if i < len(cells) else "") for i, key in header.items()}
        try:
            values = check_row(named)
        except ValueError as exc:
            refused.append((line, named.get("code", ""), str(exc)))
            continue
        if values["code"] in seen:
            refused.append((line, values["code"], "编码重复 / the code repeats an earlier row"))
            continue
        seen.add(values["code"])
        chunk.append((line, values))
        if len(chunk) >= CHUNK:
            await flush()
        if progress is not None and summary["rows"] % 1000 == 0:
            progress(summary["rows"], expected)
    if header is None:
        raise FileRefused("空文件 / the file is empty")
    await flush()
    if progress is not None:
        progress(summary["rows"], expected)
    summary["refused"] = len(refused)
    summary["seconds"] = round(time.perf_counter() - started, 2)
    if refused:
        report = errors or path.with_name(path.stem + ".errors.csv")
        with report.open("w", newline="", encoding="utf-8-sig") as f:
            writer = csv.writer(f)
            writer.writerow(["line", "code", "reason"])
            writer.writerows(sorted(refused))
        summary["report"] = str(report)
    return summary


def _safe(value: Any) -> Any:
    """A cell that a spreadsheet will not run as a formula."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


async def export_file(db: Database, path: Path) -> int:
    """Write every SKU to CSV or XLSX (the columns `import` reads); returns the SKUs written."""
    from ordertally.catalog import service

    async with db.transaction(write=False) as session:
        categories = await service.category_codes(session)
    xlsx = path.suffix.lower() == ".xlsx"
    if xlsx:
        import xlsxwriter  # type: ignore[import-untyped]

        workbook = xlsxwriter.Workbook(
            str(path), {"constant_memory": True, "strings_to_numbers": False}
        )
        sheet = workbook.add_worksheet("catalog")
        sheet.write_row(0, 0, HEADER)
        handle = None
        writer = None
    else:
        handle = path.open("w", newline="", encoding="utf-8-sig")
        writer = csv.writer(handle)
        writer.writerow(HEADER)
    written, after = 0, None
    try:
        while True:
            async with db.transaction(write=False) as session:
                page = await service.export_page(session, after, 5000)
            if not page:
                break
            for sku, bom in page:
                money = lambda m: "" if m is None else str(Decimal(m) / 100)  # noqa: E731
                row = [
                    sku.code,
                    sku.name,
                    sku.name_en,
                    sku.spec_text,
                    sku.barcode or "",
                    sku.unit,
                    *("" if getattr(sku, k) is None else str(getattr(sku, k)) for k in INTS),
                    categories.get(sku.category_id, "") if sku.category_id else "",
                    sku.brand or "",
                    sku.brand_en or "",
                    money(sku.cost_minor),
                    money(sku.min_price_minor),
                    sku.currency or "",
                    sku.image_ref or "",
                    "1" if sku.active else "0",
                    ";".join(f"{c}*{q}" for c, q in bom),
                ]
                row = [_safe(v) for v in row]
                written += 1
                if xlsx:
                    sheet.write_row(written, 0, row)
                else:
                    assert writer is not None
                    writer.writerow(row)
            after = page[-1][0].code
    finally:
        if xlsx:
            workbook.close()
        elif handle is not None:
            handle.close()
    return written


def register(app: typer.Typer) -> None:
    """Add `ordertally catalog …` to the main command line."""
    catalog_app = typer.Typer(help="商品档案 / the product master", no_args_is_help=True)
    sku_app = typer.Typer(help="SKUs", no_args_is_help=True)
    catalog_app.add_typer(sku_app, name="sku")
    app.add_typer(catalog_app, name="catalog")

    @catalog_app.command("import")
    def import_command(
        file: Annotated[Path, typer.Argument(help="CSV or XLSX catalogue file")],
        errors: Annotated[Path | None, typer.Option(help="where to write refused rows")] = None,
    ) -> None:
        """Import SKUs (create or update by code), with a per-row validation report."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from ordertally.core.settings import get_settings

        console = Console()

        async def go() -> dict[str, Any]:
            db = Database(get_settings().database_url)
            try:
                with Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    TextColumn("{task.completed}/{task.total} rows"),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                ) as bar:
                    task = bar.add_task("导入 / importing", total=None)

                    def tick(done: int, total: int | None) -> None:
                        bar.update(task, completed=done, total=total)

                    return await import_file(db, file, errors, "cli", tick)
            finally:
                await db.dispose()

        try:
            summary = asyncio.run(go())
        except FileRefused as exc:
            console.print(f"[red]{exc}[/red]")
            raise typer.Exit(EXIT_BAD_FILE) from exc
        console.print(
            f"{summary['rows']} rows: {summary['created']} created, {summary['updated']} "
            f"updated, {summary['unchanged']} unchanged, {summary['refused']} refused "
            f"in {summary['seconds']} s"
        )
        if summary["refused"]:
            console.print(f"refused rows and reasons: {summary['report']}")
            raise typer.Exit(EXIT_REFUSED)

    @catalog_app.command("export")
    def export_command(
        file: Annotated[Path, typer.Argument(help="CSV or XLSX file to write")],
    ) -> None:
        """Export every SKU (the columns import reads)."""
        from ordertally.core.settings import get_settings

        async def go() -> int:
            db = Database(get_settings().database_url)
            try:
                return await export_file(db, file)
            finally:
                await db.dispose()

        typer.echo(f"{asyncio.run(go())} SKUs written to {file.name}")

    @sku_app.command("add")
    def add_command(
        code: str,
        name: str,
        name_en: Annotated[str, typer.Option()] = "",
        barcode: Annotated[str | None, typer.Option()] = None,
        spec: Annotated[str, typer.Option(help="display string, e.g. 500g / 明前")] = "",
        category: Annotated[str | None, typer.Option()] = None,
        brand: Annotated[str | None, typer.Option()] = None,
        brand_en: Annotated[str | None, typer.Option()] = None,
        component: Annotated[
            list[str] | None, typer.Option(help="CODE*QTY; repeat to make a bundle")
        ] = None,
    ) -> None:
        """Add one SKU (a bundle with --component)."""
        from ordertally.catalog import service
        from ordertally.core.errors import OrdertallyError
        from ordertally.core.settings import get_settings

        cells = {
            "code": code,
            "name": name,
            "name_en": name_en,
            "spec": spec,
            "barcode": barcode or "",
            "category": category or "",
            "brand": brand or "",
            "brand_en": brand_en or "",
            "components": ";".join(component or []),
        }
        try:
            values = check_row(cells)
        except ValueError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(1) from exc
        components = values.pop("components", None)

        async def go() -> None:
            db = Database(get_settings().database_url)
            try:
                async with db.transaction() as session:
                    await service.create_sku(session, values, "cli", components)
            finally:
                await db.dispose()

        try:
            asyncio.run(go())
        except OrdertallyError as exc:
            typer.echo(f"{exc.code}: {exc.detail}", err=True)
            raise typer.Exit(1) from exc
        typer.echo(f"SKU {code} added")
