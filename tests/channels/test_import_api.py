"""Order files over the API (both databases): automation uploads a Taobao export, the worker
imports it, the import is polled and its rejected row downloaded (buyers' cells masked unless a
role that may see them asks); the same file again creates nothing; a wrong file, template,
account, role or scope is refused with a stable code and stores nothing; the route's body limit
admits a 20 MB file and no more."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select
from starlette.types import Receive, Scope, Send

from ordertally.auth import service as auth_service
from ordertally.channels import api as channels_api
from ordertally.channels import file_imports
from ordertally.channels.models import FileImport
from ordertally.core.db import Database
from ordertally.exports import service as exports_service
from ordertally.orders.models import SalesOrder
from tests.channels.helpers import make_account
from tests.factories import auth

pytestmark = pytest.mark.anyio

FIXTURES = Path(__file__).parent / "fixtures"
HEADER = (FIXTURES / "taobao_orders.csv").read_text(encoding="utf-8").splitlines()[0]
IMPORTS = "/api/v1/channels/{code}/imports"


def _row(no: str, status: str, name: str, phone: str, title: str, price: str, sku: str) -> str:
    """One line of a Taobao export, in the fixture's columns."""
    cells = [f"'{no}", f"tb_{no[-3:]}", "0.00", "0.00", status, name]
    cells += ["浙江省 杭州市 余杭区 文一西路969号", f"'{phone}", "2026-11-20 12:00:00"]
    cells += ["2026-11-20 12:01:00" if status != "等待买家付款" else "", title, price, "1", sku]
    return ",".join(cells)


# Two orders (the first of two lines, the second unpaid) and one row of an unknown status.
ROWS = [
    ("2088000000000201", "买家已付款，等待卖家发货", "钱十", "13611112222", "西湖龙井 250g",
     "59.90", "TEA-LJ-250"),
    ("2088000000000201", "买家已付款，等待卖家发货", "钱十", "13611112222", "茶叶礼盒",
     "10.00", "A"),
    ("2088000000000202", "等待买家付款", "孙十一", "13522223333", "青瓷茶杯", "39.90",
     "CUP-CER-01"),
    ("2088000000000203", "神秘状态", "周十二", "13455556666", "茶叶礼盒", "10.00", "A"),
]  # fmt: skip
TAOBAO = "\n".join([HEADER, *(_row(*r) for r in ROWS), ""]).encode("utf-8")


async def _count(db: Database, model: type) -> int:
    async with db.transaction(write=False) as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def _key(db: Database, role: str, **scope: list[str]) -> str:
    async with db.transaction() as session:
        _, raw = await auth_service.create_api_key(session, f"{role}-scoped", role, **scope)
    return raw


async def _upload(
    client: httpx.AsyncClient,
    key: str,
    body: bytes,
    *,
    code: str = "tb_shop",
    filename: str = "淘宝订单.csv",
    **params: str,
) -> httpx.Response:
    return await client.post(
        IMPORTS.format(code=code),
        params={"filename": filename, **params},
        content=body,
        headers=auth(key, **{"Content-Type": "application/octet-stream"}),
    )


def _rows(report: httpx.Response) -> list[list[str]]:
    return list(csv.reader(io.StringIO(report.content.decode("utf-8-sig"))))


async def test_a_taobao_export_uploaded_imported_polled_and_its_rejected_row_downloaded(
    db: Database,
    client: httpx.AsyncClient,
    keys: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Given a Taobao account
    await make_account(db, "tb_shop", "taobao")
    # When automation uploads the shop's export
    made = await _upload(client, keys["ops"], TAOBAO, template="taobao")
    # Then it is stored and queued, and nothing is imported yet
    assert made.status_code == 202, made.text
    doc = made.json()
    assert made.headers["location"] == f"/api/v1/channels/imports/{doc['id']}"
    assert {k: doc[k] for k in ("account", "filename", "template", "state", "rows", "orders")} == {
        "account": "tb_shop",
        "filename": "淘宝订单.csv",
        "template": "taobao",
        "state": "queued",
        "rows": 0,
        "orders": 0,
    }
    assert doc["created_at"] and doc["started_at"] is None and doc["finished_at"] is None
    assert await _count(db, SalesOrder) == 0
    queued = await client.get(made.headers["location"], headers=auth(keys["admin"]))
    assert queued.status_code == 200 and queued.json() == doc
    early = await client.get(f"{made.headers['location']}/rejected", headers=auth(keys["ops"]))
    assert early.status_code == 404
    assert early.json()["code"] == "channel.file_import_no_rejected_rows"
    # When the worker runs it
    assert await file_imports.run(db, doc["id"]) == "done"
    # Then the import shows its outcome
    done = (await client.get(made.headers["location"], headers=auth(keys["ops"]))).json()
    counts = ("state", "rows", "orders", "created", "updated", "duplicates")
    assert {k: done[k] for k in counts} == {
        "state": "done",
        "rows": 4,
        "orders": 2,
        "created": 2,
        "updated": 0,
        "duplicates": 0,
    }
    assert (done["held"], done["rejected_rows"], done["error"]) == (0, 1, None)
    assert done["started_at"] and done["finished_at"]
    assert await _count(db, SalesOrder) == 2
    # And its rejected row downloads with its reason, the buyer's name and phone masked
    report = await client.get(f"{made.headers['location']}/rejected", headers=auth(keys["ops"]))
    assert report.status_code == 200, report.text
    assert report.headers["content-type"] == "text/csv; charset=utf-8"
    assert report.headers["cache-control"] == "no-store"
    header, bad = _rows(report)
    assert bad[2] == "未知订单状态 / unknown status '神秘状态'"
    row = dict(zip(header, bad, strict=True))
    assert (row["收货人姓名"], row["联系手机"]) == ("周**", "134****6666")
    assert "13455556666" not in report.text and "周十二" not in report.text
    assert not any("pii access" in r.getMessage() for r in caplog.records)
    # And in clear for admin on request, the access logged
    with caplog.at_level(logging.INFO, logger="ordertally.channels.api"):
        clear = await client.get(
            f"{made.headers['location']}/rejected",
            params={"personal": "1"},
            headers=auth(keys["admin"]),
        )
    row = dict(zip(*_rows(clear), strict=True))
    assert (row["收货人姓名"], row["联系手机"]) == ("周十二", "13455556666")
    logged = [r.getMessage() for r in caplog.records if "pii access" in r.getMessage()]
    assert logged == [
        f"pii access: rejected rows of import {doc['id']} by admin-tester (admin) from 203.0.113.7"
    ]
    # When the same file is uploaded again and imported
    again = await _upload(client, keys["ops"], TAOBAO)
    assert again.status_code == 202 and again.json()["template"] is None
    assert await file_imports.run(db, again.json()["id"]) == "done"
    # Then it creates nothing: its orders are duplicates
    second = (await client.get(again.headers["location"], headers=auth(keys["ops"]))).json()
    assert (second["created"], second["duplicates"], second["rejected_rows"]) == (0, 2, 1)
    assert await _count(db, SalesOrder) == 2
    # And the view is in the OpenAPI document
    schema = (await client.get("/openapi.json")).json()
    assert "FileImportOut" in schema["components"]["schemas"]
    assert "/api/v1/channels/imports/{import_id}/rejected" in schema["paths"]


async def test_bad_input_is_a_problem_with_a_stable_code_and_stores_nothing(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a Taobao account and a Shopify one (which takes no files)
    await make_account(db, "tb_shop", "taobao")
    await make_account(db, "sp_shop", "shopify")
    ops = keys["ops"]
    # When ops uploads a text file, an empty one, one with an unknown template, one to an
    # unknown account, one to the Shopify account, and one without its name
    refusals = {
        "file": [
            await _upload(client, ops, TAOBAO, filename="orders.txt"),
            await _upload(client, ops, b""),
        ],
        "template": [await _upload(client, ops, TAOBAO, template="amazon")],
        "account": [
            await _upload(client, ops, TAOBAO, code="nope"),
            await _upload(client, ops, TAOBAO, code="sp_shop"),
        ],
    }
    nameless = await client.post(IMPORTS.format(code="tb_shop"), content=TAOBAO, headers=auth(ops))
    # Then each is a 422 problem naming what is wrong, and nothing is stored
    for field, answers in refusals.items():
        for answer in answers:
            assert answer.status_code == 422, answer.text
            assert answer.headers["content-type"] == "application/problem+json"
            problem = answer.json()
            assert (problem["code"], problem["field"]) == ("channel.file_import_refused", field)
    assert refusals["account"][1].json()["platform"] == "shopify"
    assert nameless.status_code == 422 and nameless.json()["code"] == "request.invalid"
    assert await _count(db, FileImport) == 0
    # And an import that does not exist is a 404 problem
    missing = await client.get("/api/v1/channels/imports/999", headers=auth(ops))
    assert missing.status_code == 404 and missing.json()["code"] == "channel.file_import_not_found"
    missing = await client.get("/api/v1/channels/imports/999/rejected", headers=auth(ops))
    assert missing.status_code == 404 and missing.json()["code"] == "channel.file_import_not_found"


async def test_roles_and_scopes(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a Taobao account with an imported file, a key scoped to another account, one scoped
    # to this account, and an ops key scoped to a warehouse
    await make_account(db, "tb_shop", "taobao")
    await make_account(db, "tb_other", "taobao")
    made = await _upload(client, keys["ops"], TAOBAO)
    assert await file_imports.run(db, made.json()["id"]) == "done"
    path = made.headers["location"]
    other = await _key(db, "ops", channels=["tb_other"])
    own = await _key(db, "ops", channels=["tb_shop"])
    warehouse_ops = await _key(db, "ops", warehouses=["WH-TEST"])
    # When the other account's key uploads to this account and reads its import
    answers = [
        await _upload(client, other, TAOBAO),
        await client.get(path, headers=auth(other)),
        await client.get(f"{path}/rejected", headers=auth(other)),
    ]
    # And cs and finance (which may not import) try, and someone without a key
    for role in ("cs", "finance", "warehouse"):
        answers += [
            await _upload(client, keys[role], TAOBAO),
            await client.get(path, headers=auth(keys[role])),
        ]
    anonymous = await client.get(path)
    # Then each is refused, and nothing more is stored
    assert [a.status_code for a in answers] == [403] * len(answers)
    assert {a.json()["code"] for a in answers} == {"auth.forbidden"}
    assert anonymous.status_code == 401
    assert await _count(db, FileImport) == 1
    # And this account's own key reads it, masked; in clear it may ask too
    assert (await client.get(path, headers=auth(own))).json()["state"] == "done"
    clear = await client.get(f"{path}/rejected", params={"personal": "1"}, headers=auth(own))
    assert clear.status_code == 200 and "13455556666" in clear.text
    # And a warehouse-scoped ops key gets the rows masked, and never in clear
    masked = await client.get(f"{path}/rejected", headers=auth(warehouse_ops))
    assert masked.status_code == 200 and "134****6666" in masked.text
    refused = await client.get(
        f"{path}/rejected", params={"personal": "1"}, headers=auth(warehouse_ops)
    )
    assert refused.status_code == 403
    assert refused.json()["code"] == "channel.personal_data_not_allowed"
    # The roles that see personal data in clear are the exports domain's
    assert channels_api.PII_ROLES == exports_service.PII_ROLES


async def test_the_route_admits_a_20_mb_file_and_no_more(
    db: Database, client: httpx.AsyncClient, keys: dict[str, str]
) -> None:
    # Given a Taobao account, a 20 MB file (the most an import takes), one byte more, and a
    # 21 MB body (over the app's 1 MiB default for every other route)
    await make_account(db, "tb_shop", "taobao")
    largest = TAOBAO + b"#" * (file_imports.MAX_BYTES - len(TAOBAO))
    # When each is uploaded
    admitted = await _upload(client, keys["ops"], largest)
    over = await _upload(client, keys["ops"], largest + b"#")
    huge = await _upload(client, keys["ops"], largest + b"#" * 1_000_000)
    account = await client.post(
        "/api/v1/channels/accounts",
        content=b" " * 1_500_000,
        headers=auth(keys["admin"], **{"Content-Type": "application/json"}),
    )
    # Then the 20 MB file is stored, one byte more is refused by the import's own rule, and the
    # 21 MB body and a large body to another channels route are refused at the edge
    assert admitted.status_code == 202, admitted.text
    assert over.status_code == 422
    assert (over.json()["code"], over.json()["limit"]) == (
        "channel.file_import_refused",
        file_imports.MAX_BYTES,
    )
    assert (huge.status_code, huge.json()["code"]) == (413, "request.too_large")
    assert (account.status_code, account.json()["code"]) == (413, "request.too_large")
    assert await _count(db, FileImport) == 1


async def test_the_upload_limit_matches_the_route_template_only() -> None:
    # Given the app's body limits / Then the upload route's `{code}` matches any account, and
    # the channels' other routes keep the default
    from ordertally.app import BodyLimitMiddleware, body_limits
    from ordertally.core.settings import get_settings

    async def nothing(scope: Scope, receive: Receive, send: Send) -> None:
        return None

    edge = BodyLimitMiddleware(nothing, 1024, body_limits(get_settings()))
    assert edge.limit_for("/api/v1/channels/tb_shop/imports") == file_imports.MAX_BYTES + 1
    for path in ("/api/v1/channels/imports/7", "/api/v1/channels/tb_shop/sync", "/api/v1/x"):
        assert edge.limit_for(path) == 1024
    assert edge.limit_for("/ui/channels/import") == file_imports.MAX_BYTES + 64 * 1024
