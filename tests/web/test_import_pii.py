"""Issue 14's follow-ups on the order file import (both databases): the worker parses the
upload and writes its rejected rows in memory (no file opened for writing while it runs), the
report is stored sealed, and the rejected-rows download neutralises formula cells and masks
buyers' personal data unless a role allowed to see it asks for it."""

from __future__ import annotations

import csv
import io
import os
import sys
from typing import Any

import pytest
from sqlalchemy import select, update

from ordertally.channels import file_imports
from ordertally.channels.models import FileImport
from ordertally.core.db import Database
from tests.channels.test_import import account
from tests.web.conftest import SignedInClient
from tests.web.helpers import csrf_of
from tests.web.test_import_desk import DOUYIN, _upload

pytestmark = pytest.mark.anyio

HEADER = DOUYIN.decode("utf-8-sig").splitlines()[0]
# One good order, and one refused row (quantity 0) whose cells hold a buyer's name, a full
# phone number, an address that reads as a formula and a buyer message that calls a program.
BAD = (
    "\t6920000000000009,\t6920000000000091,青瓷茶杯,单只,0,3581000002,CUP-CER-01,39.90,0.00,"
    '0.00,0.00,0.00,王小五,13712345678,广东省,深圳市,南山区,粤海街道,=HYPERLINK("x"),'
    "+cmd|calc,2026/11/21 08:00:00,,,待发货,-"
)
GOOD = DOUYIN.decode("utf-8-sig").splitlines()[3]
FILE = ("\ufeff" + "\n".join([HEADER, GOOD, BAD]) + "\n").encode()

# Files opened for writing while the worker runs (sys.addaudithook cannot be removed: a flag).
_WATCH: dict[str, Any] = {"on": False, "written": []}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _WATCH["on"] or event != "open":
        return
    path, mode, flags = args
    writes = any(c in mode for c in "wax+") if isinstance(mode, str) else bool(flags & _WRITE_FLAGS)
    if writes and isinstance(path, (str, bytes, os.PathLike)):
        _WATCH["written"].append(os.fsdecode(path))


sys.addaudithook(_audit)


async def _imported(signed_in: SignedInClient, db: Database) -> tuple[Any, str, int]:
    await account(db, "dy_pii", "douyin")
    ops = await signed_in("ops")
    token = csrf_of((await ops.get("/ui/channels/import")).text)
    made = await ops.post("/ui/channels/import", **_upload(token, "dy_pii", "dy.csv", FILE))
    path = made.headers["location"]
    import_id = int(path.rsplit("/", 1)[1])
    _WATCH.update(on=True, written=[])
    try:
        assert await file_imports.run(db, import_id) == "done"
    finally:
        _WATCH["on"] = False
    return ops, path, import_id


async def test_a_big_upload_is_stored_without_touching_disk(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a 2 MB export (over the 1 MB a multipart part is kept in memory by default)
    await account(db, "dy_big", "douyin")
    ops = await signed_in("ops")
    token = csrf_of((await ops.get("/ui/channels/import")).text)
    row = GOOD.split(",")
    rows = [",".join([f"\t69{n:014d}", f"\t69{n:014d}1", *row[2:]]) for n in range(9000)]
    big = ("\ufeff" + "\n".join([HEADER, *rows]) + "\n").encode()
    assert len(big) > 2 * 1024 * 1024
    # When ops uploads it
    _WATCH.update(on=True, written=[])
    try:
        made = await ops.post("/ui/channels/import", **_upload(token, "dy_big", "big.csv", big))
    finally:
        _WATCH["on"] = False
    # Then it is stored (sealed) and no file was opened for writing on the way
    assert made.status_code == 303
    assert _WATCH["written"] == []
    async with db.transaction(write=False) as session:
        stored = await session.scalar(select(FileImport.body).order_by(FileImport.id.desc()))
    assert stored and b"TEA-LJ-250" not in stored


def _rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8-sig"))))


async def test_nothing_in_clear_touches_disk_and_the_report_is_stored_sealed(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an uploaded file with one refused row carrying a buyer's data
    # When the worker imports it
    ops, path, import_id = await _imported(signed_in, db)
    # Then no file was opened for writing while it ran (no temporary copy of the upload or
    # of its rejected rows)
    assert _WATCH["written"] == []
    # And the stored report holds none of the buyer's cells in clear
    async with db.transaction(write=False) as session:
        stored = await session.scalar(select(FileImport.report).where(FileImport.id == import_id))
    assert stored is not None and stored.startswith(b"aesgcm:")
    for cell in ("王小五", "13712345678", "HYPERLINK", "粤海街道", "cmd|calc"):
        assert cell.encode() not in stored, cell
    # And the page reports the row as refused
    page = await ops.get(path)
    assert 'data-import="rejected">1<' in page.text
    assert 'data-action="download-rejected-personal"' in page.text


async def test_the_rejected_rows_are_masked_and_neutralised_and_clear_only_on_request(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an imported file with one refused row
    ops, path, _ = await _imported(signed_in, db)
    header = HEADER.split(",")
    at = {
        name: 3 + header.index(name) for name in ("收件人", "收件人手机号", "详细地址", "买家留言")
    }
    # When ops downloads the rejected rows
    masked = _rows((await ops.get(f"{path}/rejected.csv")).content)
    # Then the buyer's name, phone and address are masked, and no cell starts like a formula
    row = masked[1]
    assert row[:3] == ["3", "6920000000000009", "数量必须大于 0 / quantity must be above 0: '0'"]
    assert (row[at["收件人"]], row[at["收件人手机号"]]) == ("王**", "137****5678")
    assert row[at["详细地址"]] == "********"
    assert row[at["买家留言"]] == "'+cmd|calc"
    assert row[3 + header.index("省")] == "广东省"  # the region is not personal
    # When ops asks for the personal data
    clear = _rows((await ops.get(f"{path}/rejected.csv?personal=1")).content)[1]
    # Then it is in clear, still neutralised
    assert (clear[at["收件人"]], clear[at["收件人手机号"]]) == ("王小五", "13712345678")
    assert clear[at["详细地址"]] == '\'=HYPERLINK("x")'


async def test_a_report_stored_in_clear_before_sealing_is_neutralised_on_download(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given an import whose report was stored in clear and raw (before this change)
    ops, path, import_id = await _imported(signed_in, db)
    raw = (
        "\ufeff行号 line,订单号 order id,原因 reason,收件人,备注\n"
        "7,X1,bad,张三,=1+1\n8,X2,bad,李四,\t@SUM(1)\n"
    )
    async with db.transaction() as session:
        await session.execute(
            update(FileImport).where(FileImport.id == import_id).values(report=raw.encode())
        )
    # When ops downloads it
    rows = _rows((await ops.get(f"{path}/rejected.csv")).content)
    # Then formula cells are neutralised and names masked
    assert rows[1][3:] == ["张*", "'=1+1"]
    assert rows[2][3:] == ["李*", "'\t@SUM(1)"]
