"""POST /orders through `CreateOrderRoute`'s plain lane against FastAPI's own handling of the
same route: the same bytes for a created order, the same problem for every refused request."""

import re
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from fastapi.routing import APIRoute
from httpx import AsyncClient
from sqlalchemy import func, select

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.orders import api as orders_api
from ordertally.orders.models import SalesOrder
from tests.factories import auth, order_body

pytestmark = pytest.mark.anyio

PATH = "/api/v1/orders"
JSON = {"Content-Type": "application/json"}


def _fastapi_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The route as FastAPI handles it with the lane taken out (the reference)."""
    monkeypatch.setattr(orders_api.CreateOrderRoute, "handle", APIRoute.handle)


def _count_solves(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times FastAPI solved a route's dependencies (it does for every request it
    handles itself)."""
    import fastapi.routing

    calls: list[int] = []
    solve = fastapi.routing.solve_dependencies

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return await solve(*args, **kwargs)

    monkeypatch.setattr(fastapi.routing, "solve_dependencies", counted)
    return calls


def _answer(response: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    return response.status_code, list(response.headers.multi_items()), response.content


def _normalised(answer: tuple[int, list[tuple[str, str]], bytes]) -> Any:
    """A created order's answer with what differs from one order to the next replaced: its
    number (and the tracking link's signature of it) and the ids of the rows written for it."""
    status, headers, content = answer
    order_no = orjson.loads(content)["order_no"]
    content = content.replace(order_no.encode(), b"ORDER")
    content = re.sub(rb"ORDER\.[0-9a-f]+", b"ORDER.SIGNED", content)
    content = re.sub(rb'"id":\d+', b'"id":0', content)
    headers = [(k, v.replace(order_no, "ORDER")) for k, v in headers]
    return status, headers, content


async def test_a_plain_request_gets_the_same_bytes_as_through_fastapi(
    client: AsyncClient, keys: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the same order sent under two keys at the same frozen moment, plain each time
    solves = _count_solves(monkeypatch)
    content = orjson.dumps(order_body(discount="10.00"))
    with clock.frozen(datetime(2026, 12, 6, 4, 0, tzinfo=UTC)):
        # When the lane answers the first, and FastAPI alone the second
        lane = await client.post(
            PATH, content=content, headers=auth(keys["ops"], **JSON, **{"Idempotency-Key": "a"})
        )
        assert solves == []  # the lane answered: no dependency solving
        _fastapi_only(monkeypatch)
        reference = await client.post(
            PATH, content=content, headers=auth(keys["ops"], **JSON, **{"Idempotency-Key": "b"})
        )
        assert solves == [1]
    # Then both are created, and the answers are the same bytes but for the order's number
    # and row ids: status, headers in their order, the document
    assert lane.status_code == 201, lane.text
    assert _normalised(_answer(lane)) == _normalised(_answer(reference))
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(SalesOrder)) == 2


async def test_a_replayed_key_is_answered_by_the_lane_as_stored(
    client: AsyncClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an order created under a key
    headers = auth(keys["ops"], **JSON, **{"Idempotency-Key": "k-1"})
    content = orjson.dumps(order_body())
    first = await client.post(PATH, content=content, headers=headers)
    # When the same request comes again through the lane, then through FastAPI
    solves = _count_solves(monkeypatch)
    again = await client.post(PATH, content=content, headers=headers)
    assert solves == []
    _fastapi_only(monkeypatch)
    reference = await client.post(PATH, content=content, headers=headers)
    # Then both replay the stored answer, the same bytes
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert _answer(again) == _answer(reference)
    assert again.content == first.content


def _refused(keys: dict[str, str]) -> list[tuple[str, dict[str, str], bytes]]:
    """Requests the route refuses, each with the headers and body it is sent with."""
    good = orjson.dumps(order_body())
    no_lines = orjson.dumps({**order_body(), "lines": []})
    ops, finance = auth(keys["ops"]), auth(keys["finance"])
    return [
        ("malformed JSON", {**ops, **JSON}, b'{"channel": '),
        ("malformed JSON, no key", JSON, b'{"channel": '),
        ("NaN (the standard library's JSON takes it)", {**ops, **JSON}, b'{"channel": NaN}'),
        ("a list", {**ops, **JSON}, b"[1, 2]"),
        ("no body", {**ops, **JSON}, b""),
        ("no lines", {**ops, **JSON}, no_lines),
        ("no lines, no key", JSON, no_lines),
        ("no lines, a role without the permission", {**finance, **JSON}, no_lines),
        ("no API key", JSON, good),
        ("an unknown API key", {**auth("nope"), **JSON}, good),
        ("a role without the permission", {**finance, **JSON}, good),
        ("an empty Idempotency-Key", {**ops, **JSON, "Idempotency-Key": ""}, good),
        ("a key of 256 characters", {**ops, **JSON, "Idempotency-Key": "k" * 256}, good),
        ("not JSON", {**ops, "Content-Type": "text/plain"}, good),
        ("no content type", ops, good),
    ]


async def test_every_refused_request_gets_the_same_problem_as_through_fastapi(
    client: AsyncClient, keys: dict[str, str], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given requests the route refuses, sent once through the route as it is
    cases = _refused(keys)
    lane = [await client.post(PATH, content=body, headers=h) for _, h, body in cases]
    # When they are sent again to FastAPI alone
    _fastapi_only(monkeypatch)
    reference = [await client.post(PATH, content=body, headers=h) for _, h, body in cases]
    # Then each gets the same status, headers and problem document, and nothing was created
    for (name, _, _), got, expected in zip(cases, lane, reference, strict=True):
        assert got.status_code >= 400, name
        assert _answer(got) == _answer(expected), name
    statuses = {name: got.status_code for (name, _, _), got in zip(cases, lane, strict=True)}
    assert statuses["malformed JSON, no key"] == 422  # the body is parsed before the caller
    assert statuses["no lines, no key"] == 401  # and the caller checked before its shape
    assert statuses["no lines, a role without the permission"] == 403
    async with db.transaction(write=False) as session:
        assert await session.scalar(select(func.count()).select_from(SalesOrder)) == 0


async def test_what_the_lane_does_not_take_fastapi_answers(
    client: AsyncClient, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given valid orders the lane leaves to FastAPI: a charset in the content type, two keys
    solves = _count_solves(monkeypatch)
    with_charset = await client.post(
        PATH,
        content=orjson.dumps(order_body()),
        headers=auth(keys["ops"], **{"Content-Type": "application/json; charset=utf-8"}),
    )
    two_keys = await client.post(
        PATH,
        content=orjson.dumps(order_body(external_id="X-2")),
        headers=[
            *auth(keys["ops"], **JSON).items(),
            ("Idempotency-Key", "first"),
            ("Idempotency-Key", "second"),
        ],
    )
    # Then FastAPI created both
    assert (with_charset.status_code, two_keys.status_code) == (201, 201), two_keys.text
    assert solves == [1, 1]
