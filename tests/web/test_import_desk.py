"""The order file import screen over HTTP (both databases): ops uploads the Douyin shop's
export, the worker imports it (progress, counts), the rejected row downloads with its reason;
the same file again creates nothing; a wrong file, account, role or token stores nothing."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from ordertally.channels import file_imports
from ordertally.channels.models import FileImport
from ordertally.core.db import Database
from ordertally.orders.models import SalesOrder
from tests.channels.test_import import account
from tests.web.conftest import SignedInClient
from tests.web.helpers import count, csrf_of

pytestmark = pytest.mark.anyio
# The Douyin shop's export (see tests/channels/fixtures/SOURCES.md): 3 good orders, 1 bad row.
DOUYIN = (Path(__file__).parents[1] / "channels" / "fixtures" / "douyin_orders.csv").read_bytes()


def _upload(token: str, account_code: str, name: str, body: bytes, template: str = "") -> dict:
    return {
        "data": {"csrf_token": token, "account": account_code, "template": template},
        "files": {"file": (name, body, "text/csv")},
    }


async def test_ops_uploads_a_douyin_export_and_downloads_the_rejected_row(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a Douyin account and ops on the import screen
    await account(db, "dy_shop", "douyin")
    ops = await signed_in("ops")
    page = await ops.get("/ui/channels/import")
    assert page.status_code == 200 and 'value="dy_shop"' in page.text
    token = csrf_of(page.text)
    # When ops uploads the shop's export
    made = await ops.post(
        "/ui/channels/import", **_upload(token, "dy_shop", "抖店订单.csv", DOUYIN)
    )
    # Then the file is stored and queued, and its page polls while nothing is imported yet
    assert made.status_code == 303
    path = made.headers["location"]
    import_id = int(path.rsplit("/", 1)[1])
    queued = await ops.get(path)
    assert 'data-import-state="queued"' in queued.text and 'hx-trigger="every 1s"' in queued.text
    assert await count(db, SalesOrder) == 0
    # And the stored file is sealed: none of its buyers' data lies in the table in clear
    async with db.transaction(write=False) as session:
        stored = await session.scalar(select(FileImport.body).where(FileImport.id == import_id))
    assert stored and DOUYIN not in stored
    for line in DOUYIN.decode().splitlines()[1:]:
        for cell in line.split(","):
            if len(cell) >= 4:
                assert cell.encode() not in stored, cell
    # When the worker runs it
    assert await file_imports.run(db, import_id) == "done"
    assert await file_imports.run(db, import_id) is None  # done: nobody claims it again
    # Then the progress block shows the outcome, and the rejected row downloads with its reason
    done = await ops.get(path, headers={"hx-target": "import-progress"})
    assert "<html" not in done.text and 'data-import-state="done"' in done.text
    figures = dict(re.findall(r'data-import="(\w+)">(\d+)<', done.text))
    assert figures == {"rows": "5", "orders": "3", "created": "3", "updated": "0",
                       "duplicates": "0", "held": "1", "rejected": "1"}  # fmt: skip
    assert await count(db, SalesOrder) == 3
    report = await ops.get(f"{path}/rejected.csv")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(report.content.decode("utf-8-sig"))))
    assert rows[1][:3] == [
        "5",
        "6920000000000003",
        "数量必须大于 0 / quantity must be above 0: '0'",
    ]
    # And the same file uploaded again creates nothing
    again = await ops.post(
        "/ui/channels/import", **_upload(token, "dy_shop", "抖店订单.csv", DOUYIN, "douyin")
    )
    second = int(again.headers["location"].rsplit("/", 1)[1])
    assert await file_imports.run(db, second) == "done"
    page = await ops.get(f"/ui/imports/{second}")
    assert re.search(r'data-import="created">0<', page.text)
    assert re.search(r'data-import="duplicates">3<', page.text)
    assert await count(db, SalesOrder) == 3


async def test_a_wrong_file_account_role_or_token_stores_nothing(
    signed_in: SignedInClient, db: Database
) -> None:
    # Given a Douyin account and a Shopify one (which takes no files)
    await account(db, "dy_shop", "douyin")
    await account(db, "sp_shop", "shopify")
    ops = await signed_in("ops")
    cs = await signed_in("cs")
    token = csrf_of((await ops.get("/ui/channels/import")).text)
    # When ops uploads a text file, an empty file, a file for the Shopify account, or no token
    text = await ops.post("/ui/channels/import", **_upload(token, "dy_shop", "a.txt", DOUYIN))
    empty = await ops.post("/ui/channels/import", **_upload(token, "dy_shop", "a.csv", b""))
    shopify = await ops.post("/ui/channels/import", **_upload(token, "sp_shop", "a.csv", DOUYIN))
    template = await ops.post(
        "/ui/channels/import", **_upload(token, "dy_shop", "a.csv", DOUYIN, "nope")
    )
    forged = await ops.post("/ui/channels/import", **_upload("", "dy_shop", "a.csv", DOUYIN))
    # Then each is refused with its reason, and cs may not open the screen
    assert text.status_code == 422 and "请选择不超过 20 MB 的 .csv 或 .xlsx 文件" in text.text
    assert empty.status_code == 422
    assert shopify.status_code == 422 and "data-import-error" in shopify.text
    assert template.status_code == 422
    assert forged.status_code == 403
    assert (await cs.get("/ui/channels/import")).status_code == 403
    assert (await ops.get("/ui/imports/999")).status_code == 404
    assert await count(db, FileImport) == 0
