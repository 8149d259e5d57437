"""Reading a platform order file row by row: CSV in UTF-8, UTF-8 with BOM, UTF-16 with BOM or
GB18030 (a superset of GBK, what Chinese back offices export), comma or tab separated; XLSX
through python-calamine, the first sheet, row by row. A file is read from disk (a `Path`) or from
memory (`InMemoryFile`: an upload decrypted for its import never touches disk in clear)."""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path, PurePath
from typing import BinaryIO, TextIO

from ordertally.channels.files.errors import FileError

Cell = str | int | float | bool | datetime | date | time | timedelta | None


@dataclass(frozen=True, slots=True)
class InMemoryFile:
    """A file's bytes held in memory under its name (the name's suffix tells the format)."""

    name: str
    data: bytes = b""


Source = Path | InMemoryFile


def _open(source: Source) -> BinaryIO:
    return source.open("rb") if isinstance(source, Path) else io.BytesIO(source.data)


def source_size(source: Source) -> int:
    """The file's size in bytes."""
    return source.stat().st_size if isinstance(source, Path) else len(source.data)


def _decode_check(path: Source, encoding: str) -> bool:
    """Whether the whole file decodes (streamed, so a 100 MB file costs no memory)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    try:
        with _open(path) as f:
            while chunk := f.read(1 << 20):
                decoder.decode(chunk)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def csv_encoding(path: Source) -> str:
    """The file's encoding: a BOM decides; else UTF-8 if all of it decodes, else GB18030."""
    with _open(path) as f:
        head = f.read(4)
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    if _decode_check(path, "utf-8"):
        return "utf-8"
    if _decode_check(path, "gb18030"):
        return "gb18030"
    raise FileError("文件编码无法识别 / the file is neither UTF-8 nor GB18030 text")


def _csv_rows(path: Source) -> Iterator[tuple[int, list[Cell]]]:
    encoding = csv_encoding(path)
    with io.TextIOWrapper(_open(path), encoding=encoding, newline="") as f:
        sample = f.read(8192)
        f.seek(0)
        first_line = sample.lstrip("\ufeff").split("\n", 1)[0]
        delimiter = "\t" if first_line.count("\t") > first_line.count(",") else ","
        yield from _read_csv(f, delimiter)


def _read_csv(f: TextIO, delimiter: str) -> Iterator[tuple[int, list[Cell]]]:
    reader = csv.reader(f, delimiter=delimiter)
    line = 1
    try:
        for row in reader:
            yield line, list(row)
            line = reader.line_num + 1
    except csv.Error as exc:
        raise FileError(f"CSV 格式错误 / malformed CSV near line {line}: {exc}") from exc


def _xlsx_rows(path: Source) -> tuple[Iterator[tuple[int, list[Cell]]], int]:
    from python_calamine import CalamineError, CalamineWorkbook

    try:
        workbook = (
            CalamineWorkbook.from_path(str(path))
            if isinstance(path, Path)
            else CalamineWorkbook.from_filelike(io.BytesIO(path.data))
        )
        sheet = workbook.get_sheet_by_index(0)
    except (CalamineError, OSError, ValueError) as exc:
        raise FileError(f"无法读取 XLSX / cannot read the XLSX file: {exc}") from exc
    start_row = (sheet.start or (0, 0))[0]

    def rows() -> Iterator[tuple[int, list[Cell]]]:
        # calamine holds the sheet's cells natively; Python objects are made one row at a time.
        try:
            for index, row in enumerate(sheet.iter_rows()):
                yield start_row + index + 1, list(row)
        except (CalamineError, ValueError) as exc:
            raise FileError(f"无法读取 XLSX / cannot read the XLSX file: {exc}") from exc
        finally:
            workbook.close()

    return rows(), max(sheet.height - 1, 0)


def read_rows(path: Source) -> tuple[Iterator[tuple[int, list[Cell]]], int | None]:
    """(line number, cells) of every row of the file, the header first, and the number of data
    rows when the format tells it up front (XLSX) for progress bars."""
    if isinstance(path, Path) and not path.is_file():
        raise FileError(f"文件不存在 / no such file: {path.name}")
    suffix = PurePath(path.name).suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        with _open(path) as f:
            if f.read(4) != b"PK\x03\x04":
                raise FileError("不是 XLSX 文件 / not an XLSX file (zip signature missing)")
        return _xlsx_rows(path)
    if suffix in (".csv", ".txt", ".tsv"):
        return _csv_rows(path), None
    raise FileError(f"不支持的文件类型 / unsupported file type {suffix!r}: use .csv or .xlsx")
