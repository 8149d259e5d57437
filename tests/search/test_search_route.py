"""`GET /api/v1/search` answered without FastAPI's dependency solving when its parameters are
plain (`search.api.SearchRoute`), its rows read through the driver: on both databases every
answer is byte for byte the one the former path gives (`service.search` over a session, shaped
by `hit_doc`), for every query kind, role, channel scope, filter and page; a request whose
parameters are not plain goes through FastAPI as declared and gets the same problem as before."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from ordertally.auth import service as auth_service
from ordertally.auth.api import authorize
from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.http import json_response
from ordertally.orders.models import SalesOrder
from ordertally.search import api, dictionary, service
from ordertally.search.repository import Filters
from tests.factories import auth
from tests.search.test_search import NEXT_DAY, orders  # noqa: F401  (the indexed orders)

pytestmark = pytest.mark.anyio

# Queries of every kind the three orders are found by (and some that find nothing).
QUERIES = (
    "曾单",
    "zengshan",
    "zhang san",
    "zhangshan",
    "piaoqiu",
    "13812345678",
    "+86 138 1234 5678",
    "138****5678",
    "5678",
    "1234 张三",
    "JD-778899001",
    "TEA-LJ-250",
    "测试商品",
    "test item",
    "浦东 世纪大道",
    "朝阳区 建国路",
    "20260125",
    "2026-01-25 张三",
    "1月25日 曾单",
    "1/25 朴仇",
    "一月二十五号 朴仇",
    "昨天 张三",
    "李雷",
    "",
)
# Filters and pages, each with a query.
PARAMS: tuple[dict[str, Any], ...] = (
    {"q": "20260125", "status": "allocated"},
    {"q": "", "channel": "jd"},
    {"q": "", "date_from": "2026-01-25", "date_to": "2026-01-25"},
    {"q": "测试商品", "date_from": "2026-01-26"},
    {"q": "测试商品", "has_open_exception": "true"},
    {"q": "测试商品", "has_open_exception": "false", "limit": "2"},
    {"q": "测试商品", "warehouse": "WH-SH"},
    {"q": "5678", "carrier": "sf"},
    {"q": "测试商品", "limit": "1"},
    {"q": "test item", "limit": "100"},
)


def _args(params: dict[str, Any]) -> api.SearchArgs:
    args = api.plain_args(str(httpx.QueryParams(params)).encode())
    assert args is not None, params
    return args


async def _former_answer(
    db: Database, app: Any, key: str, params: dict[str, Any]
) -> tuple[int, bytes]:
    """What the search answered before this path: the caller's filters, `service.search` in a
    reads() session, `hit_doc` per hit, serialised by `json_response`."""
    principal = await authorize(app, f"Bearer {key}", "search.read")
    args = _args(params)
    filters = Filters(
        status=args.status,
        channel=args.channel,
        date_from=args.date_from.isoformat() if args.date_from else None,
        date_to=args.date_to.isoformat() if args.date_to else None,
        open_exception=args.has_open_exception,
        channels=principal.channels,
    )
    words = await dictionary.current(db)
    async with db.reads() as session:
        page = await service.search(
            session,
            args.q,
            filters,
            warehouse=args.warehouse,
            carrier=args.carrier,
            cursor=args.cursor,
            limit=args.limit,
            words=words,
        )
    response = json_response(
        {
            "query": [{"text": t.text, "kind": t.kind, "words": list(t.words)} for t in page.terms],
            "items": [api.hit_doc(h, principal.role) for h in page.hits],
            "next_cursor": page.next_cursor,
        }
    )
    return response.status_code, bytes(response.body)


@pytest.fixture
def declared_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every search request through FastAPI's declared route (no plain path)."""
    monkeypatch.setattr(api, "plain_args", lambda query_string: None)
    yield


@pytest.fixture
def declared_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The search requests FastAPI's own route handling saw (their query strings)."""
    seen: list[str] = []
    handle = APIRoute.handle

    async def counted(self: APIRoute, scope: Any, receive: Any, send: Any) -> None:
        if isinstance(self, api.SearchRoute):
            seen.append(scope["query_string"].decode())
        await handle(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counted)
    return seen


async def _scoped_key(db: Database) -> str:
    async with db.transaction() as session:
        _, key = await auth_service.create_api_key(session, "cs-jd", "cs", channels=["jd"])
    return key


async def test_every_answer_is_the_former_paths_byte_for_byte(
    orders: dict[str, SalesOrder],  # noqa: F811
    client: httpx.AsyncClient,
    keys: dict[str, str],
    app: Any,
    db: Database,
    declared_calls: list[str],
) -> None:
    # Given three indexed orders, a key per role and a key scoped to the jd channel
    callers = {**keys, "cs-jd": await _scoped_key(db)}
    requests = [{"q": q} for q in QUERIES] + list(PARAMS)
    wrong = []
    answered = 0
    with clock.frozen(NEXT_DAY):
        for name, key in callers.items():
            for params in requests:
                # When the caller searches
                r = await client.get("/api/v1/search", params=params, headers=auth(key))
                # Then the answer is the former path's, byte for byte
                status, body = await _former_answer(db, app, key, params)
                if (r.status_code, r.content) != (status, body):
                    wrong.append((name, params, r.text, body.decode()))
                answered += len(r.json()["items"])
                assert r.headers["content-type"] == "application/json"
        # And so are the pages after each cursor
        cursor, pages = None, 0
        while True:
            params = {"q": "测试商品", "limit": "1", **({"cursor": cursor} if cursor else {})}
            r = await client.get("/api/v1/search", params=params, headers=auth(keys["cs"]))
            status, body = await _former_answer(db, app, keys["cs"], params)
            assert (r.status_code, r.content) == (status, body)
            pages += 1
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
    assert wrong == []
    assert answered > 100 and pages == 3
    # And not one of these requests went through FastAPI's dependency solving
    assert declared_calls == []


async def test_the_declared_route_answers_the_same(
    orders: dict[str, SalesOrder],  # noqa: F811
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the answers of the plain path
    requests = [{"q": q} for q in QUERIES[::3]] + list(PARAMS)
    with clock.frozen(NEXT_DAY):
        plain = [
            (await client.get("/api/v1/search", params=p, headers=auth(keys["ops"]))).content
            for p in requests
        ]
        # When the same requests go through FastAPI's declared route
        monkeypatch.setattr(api, "plain_args", lambda query_string: None)
        declared = [
            (await client.get("/api/v1/search", params=p, headers=auth(keys["ops"]))).content
            for p in requests
        ]
    # Then the bytes are the same
    assert declared == plain


# Requests the plain path must leave to FastAPI, or whose refusal it must give as FastAPI does:
# (parameters, status, problem code).
REFUSED: tuple[tuple[dict[str, str], int, str], ...] = (
    ({"limit": "0"}, 422, "request.invalid"),
    ({"limit": "101"}, 422, "request.invalid"),
    ({"limit": "abc"}, 422, "request.invalid"),
    ({"limit": ""}, 422, "request.invalid"),
    ({"q": "x" * 201}, 422, "request.invalid"),
    ({"status": "s" * 33}, 422, "request.invalid"),
    ({"date_from": "2026-02-30"}, 422, "request.invalid"),
    ({"date_from": "yesterday"}, 422, "request.invalid"),
    ({"has_open_exception": "maybe"}, 422, "request.invalid"),
    ({"status": "lost"}, 400, "search.invalid_filter"),
    ({"status": ""}, 400, "search.invalid_filter"),
    ({"date_from": "2026-01-26", "date_to": "2026-01-25"}, 400, "search.invalid_filter"),
    ({"cursor": "nope"}, 400, "search.invalid_cursor"),
)


async def test_bad_requests_get_the_problem_fastapi_gives(
    orders: dict[str, SalesOrder],  # noqa: F811
    client: httpx.AsyncClient,
    keys: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cs = auth(keys["cs"])
    cases = [(p, cs, status, code) for p, status, code in REFUSED]
    cases += [
        ({"q": "5678"}, {}, 401, "auth.unauthenticated"),
        ({"q": "5678"}, auth("ot_not-a-key"), 401, "auth.unauthenticated"),
        ({"limit": "0"}, {}, 401, "auth.unauthenticated"),  # auth first, as the dependency
    ]
    # When each is sent / Then the expected problem comes back
    got = []
    for params, headers, _, _ in cases:
        r = await client.get("/api/v1/search", params=params, headers=headers)
        assert r.headers["content-type"] == "application/problem+json", params
        got.append((r.status_code, r.json()["code"], r.content))
    assert [(s, c) for s, c, _ in got] == [(s, c) for _, _, s, c in cases]
    # And through FastAPI's declared route alone the bytes are the same
    monkeypatch.setattr(api, "plain_args", lambda query_string: None)
    for (params, headers, _, _), (_, _, body) in zip(cases, got, strict=True):
        r = await client.get("/api/v1/search", params=params, headers=headers)
        assert r.content == body, params


def test_plain_args_takes_only_what_the_declaration_takes_as_it_is() -> None:
    # Plain forms are read as FastAPI reads them (the last of a repeated name)
    assert api.plain_args(b"") == api.SearchArgs()
    assert api.plain_args(
        b"q=%E5%BC%A0%E4%B8%89+5678&status=paid&channel=jd&warehouse=WH-SH&carrier=sf"
        b"&date_from=2026-01-25&date_to=2026-01-26&has_open_exception=false&cursor=b246&limit=100"
        b"&limit=7&unknown=1"
    ) == api.SearchArgs(
        q="张三 5678",
        status="paid",
        channel="jd",
        warehouse="WH-SH",
        carrier="sf",
        date_from=date(2026, 1, 25),
        date_to=date(2026, 1, 26),
        has_open_exception=False,
        cursor="b246",
        limit=7,
    )
    assert api.plain_args(b"q=&status=") == api.SearchArgs(q="", status="")
    assert api.plain_args(("q=" + "x" * 200).encode()) == api.SearchArgs(q="x" * 200)
    # Anything else is left to FastAPI's validation
    for query in (
        "limit=0",
        "limit=101",
        "limit=05",
        "limit=+5",
        "limit=5.0",
        "limit=%205",
        "limit=%D9%A5",  # an Arabic-Indic five
        "has_open_exception=yes",
        "has_open_exception=True",
        "date_from=20260125",
        "date_from=2026-1-25",
        "date_to=2026-02-30",
        "q=" + "x" * 201,
        "cursor=" + "c" * 201,
        "channel=" + "c" * 33,
    ):
        assert api.plain_args(query.encode()) is None, query
