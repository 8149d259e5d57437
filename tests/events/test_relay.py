"""The broker relay against the real RabbitMQ and NATS JetStream: every outbox event arrives once
with its id, type, routing key / subject and envelope body; a broker that is down leaves the
events pending (attempts counted, error kept, nothing lost) and they go out once it is back; a
re-publish keeps the event id (JetStream drops it, RabbitMQ consumers can); a connection lost
mid-life is reopened."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import aio_pika
import nats
import pytest
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from pydantic import ValidationError
from sqlalchemy import delete, select, update

from ordertally.core import clock
from ordertally.core.db import Database
from ordertally.core.settings import Settings, get_settings, reset_settings
from ordertally.events import relay
from ordertally.events.dispatcher import drain, envelope_of
from ordertally.events.models import DeadLetter, OutboxEvent, ProcessedEvent
from ordertally.events.registry import CONSUMERS, consumers_for
from tests.conftest import REQUIRE_SERVICES
from tests.factories import make_order

pytestmark = pytest.mark.anyio

AMQP_URL = os.environ.get("ORDERTALLY_TEST_AMQP_URL", "")
NATS_URL = os.environ.get("ORDERTALLY_TEST_NATS_URL", "")


def _service(url: str, variable: str) -> str:
    if not url:
        if REQUIRE_SERVICES:
            pytest.fail(f"{variable} is not set but ORDERTALLY_REQUIRE_SERVICES=1")
        pytest.skip(f"broker not configured (set {variable})")
    return url


def _closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_port(url: str, port: int) -> str:
    """The same broker URL (credentials, vhost) on another 127.0.0.1 port."""
    scheme, _, rest = url.partition("://")
    userinfo, _, hostpart = rest.rpartition("@")
    _, slash, path = hostpart.partition("/")
    creds = f"{userinfo}@" if userinfo else ""
    return f"{scheme}://{creds}127.0.0.1:{port}{slash}{path}"


# --- what the database says ------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    event_id: str
    event_type: str
    status: str
    attempts: int
    last_error: str | None
    body: dict[str, Any]


async def _outbox(db: Database) -> list[Row]:
    async with db.transaction(write=False) as session:
        rows = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all()
        return [
            Row(
                r.event_id,
                r.event_type,
                r.status,
                r.attempts,
                r.last_error,
                envelope_of(r).model_dump(mode="json"),
            )
            for r in rows
        ]


async def _relayed(db: Database) -> set[str]:
    async with db.transaction(write=False) as session:
        rows = await session.scalars(
            select(ProcessedEvent.event_id).where(ProcessedEvent.consumer == relay.CONSUMER_NAME)
        )
        return set(rows.all())


async def _dead_letters(db: Database) -> int:
    async with db.transaction(write=False) as session:
        return len((await session.scalars(select(DeadLetter.id))).all())


async def _orders(db: Database) -> None:
    """A few orders: created, paid, cancelled (their events land in the outbox)."""
    await make_order(db)
    await make_order(db, status="paid")
    await make_order(db, status="closed")


async def _forget_relay(db: Database) -> None:
    """As if the relay's commit had been lost after the broker took the messages."""
    async with db.transaction() as session:
        await session.execute(
            delete(ProcessedEvent).where(ProcessedEvent.consumer == relay.CONSUMER_NAME)
        )
        await session.execute(
            update(OutboxEvent).values(status="pending", done_at=None, available_at=clock.now())
        )


# --- the relay under test --------------------------------------------------------------------

Configure = Callable[..., Awaitable[None]]


@pytest.fixture
async def configure(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Configure]:
    """Point the relay at a broker (env + settings reset) and register it; undo afterwards."""
    CONSUMERS.pop(relay.CONSUMER_NAME, None)

    async def point(url: str, **settings: Any) -> None:
        monkeypatch.setenv("ORDERTALLY_BROKER_URL", url)
        monkeypatch.setenv("ORDERTALLY_BROKER_TIMEOUT_SECONDS", "2")
        monkeypatch.setenv("ORDERTALLY_BROKER_RETRY_SECONDS", "0")
        # An event that failed is due again after the outbox backoff (2 s by default, real time):
        # on a loaded machine a drain can take longer than that and try it twice. The tests make
        # failed events due by advancing the clock an hour instead.
        monkeypatch.setenv("ORDERTALLY_OUTBOX_BACKOFF_BASE_SECONDS", "600")
        for name, value in settings.items():
            monkeypatch.setenv(f"ORDERTALLY_BROKER_{name.upper()}", str(value))
        reset_settings()
        assert relay.register(get_settings())

    try:
        yield point
    finally:
        CONSUMERS.pop(relay.CONSUMER_NAME, None)
        await relay.close()


# --- configuration ---------------------------------------------------------------------------


async def test_relay_is_off_without_a_url_and_kafka_is_refused() -> None:
    CONSUMERS.pop(relay.CONSUMER_NAME, None)
    assert relay.register(Settings(broker_url="")) is False
    assert relay.CONSUMER_NAME not in CONSUMERS
    with pytest.raises(ValidationError, match="Kafka is not supported"):
        Settings(broker_url="kafka://127.0.0.1:9092")
    with pytest.raises(ValidationError, match="amqp://"):
        Settings(broker_url="redis://127.0.0.1:6379")
    assert (
        relay.redact("amqp://user:s3cret@mq.internal:5672/prod") == "amqp://mq.internal:5672/prod"
    )
    assert relay.redact("nats://token@127.0.0.1:4222") == "nats://127.0.0.1:4222"


# --- RabbitMQ --------------------------------------------------------------------------------


@dataclass
class RabbitTap:
    url: str
    exchange: str
    queue: aio_pika.abc.AbstractQueue

    async def take(self) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Every message waiting in the test queue."""
        taken = []
        while (msg := await self.queue.get(no_ack=True, fail=False, timeout=5)) is not None:
            taken.append(msg)
        return taken


@pytest.fixture
async def rabbit() -> AsyncIterator[RabbitTap]:
    """A unique exchange (declared as the relay declares it) and an exclusive queue bound to #."""
    url = _service(AMQP_URL, "ORDERTALLY_TEST_AMQP_URL")
    tag = uuid.uuid4().hex[:12]
    connection = await aio_pika.connect(url, timeout=5)
    try:
        channel = await connection.channel()
        exchange = await channel.declare_exchange(
            f"ordertally.test.{tag}", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            f"ordertally.test.{tag}", exclusive=True, auto_delete=True
        )
        await queue.bind(exchange, "#")
        try:
            yield RabbitTap(url, exchange.name, queue)
        finally:
            await queue.delete(if_unused=False, if_empty=False)
            await exchange.delete()
    finally:
        await connection.close()


def _check_rabbit(msgs: list[aio_pika.abc.AbstractIncomingMessage], rows: list[Row]) -> None:
    """One message per event, carrying its id, type, routing key, envelope body, headers."""
    by_id = {r.event_id: r for r in rows}
    assert sorted(str(m.message_id) for m in msgs) == sorted(by_id)
    for msg in msgs:
        row = by_id[str(msg.message_id)]
        assert msg.routing_key == row.event_type
        assert msg.type == row.event_type
        assert msg.content_type == "application/json"
        assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        assert msg.headers == {"type": row.event_type, "version": row.body["version"]}
        assert json.loads(msg.body) == row.body


async def test_rabbitmq_receives_every_event_once(
    db: Database, rabbit: RabbitTap, configure: Configure
) -> None:
    await _orders(db)
    await configure(rabbit.url, exchange=rabbit.exchange)
    assert [c.name for c in consumers_for("AnyEventTypeAtAll")] == [relay.CONSUMER_NAME]

    await drain(db, get_settings())

    rows = await _outbox(db)
    types = {r.event_type for r in rows}
    assert {"OrderCreated"} <= types and len(rows) >= 3
    assert {r.status for r in rows} == {"done"}
    assert await _relayed(db) == {r.event_id for r in rows}
    _check_rabbit(await rabbit.take(), rows)

    # Nothing more goes out on a second pass.
    await drain(db, get_settings())
    assert await rabbit.take() == []


async def test_rabbitmq_down_keeps_events_pending_then_delivers(
    db: Database, rabbit: RabbitTap, configure: Configure
) -> None:
    await _orders(db)
    down = _with_port(rabbit.url, _closed_port())
    await configure(down, exchange=rabbit.exchange, retry_seconds=30)

    await drain(db, get_settings())

    rows = await _outbox(db)
    assert rows and {r.status for r in rows} == {"pending"}
    assert {r.attempts for r in rows} == {1}
    for row in rows:
        assert row.last_error and "broker.relay: BrokerUnavailable" in row.last_error
        assert "guest:guest" not in row.last_error  # credentials never recorded
    # Only the first event waited for a connect; the rest failed fast behind it.
    assert sum("cannot connect to amqp://127.0.0.1" in (r.last_error or "") for r in rows) == 1
    assert await _relayed(db) == set()
    assert await _dead_letters(db) == 0
    assert await rabbit.take() == []

    await configure(rabbit.url, exchange=rabbit.exchange)
    clock.advance(timedelta(hours=1))
    await drain(db, get_settings())

    after = await _outbox(db)
    assert {r.status for r in after} == {"done"}
    assert {r.attempts for r in after} == {1}
    _check_rabbit(await rabbit.take(), after)


# --- NATS JetStream --------------------------------------------------------------------------


@dataclass
class NatsTap:
    url: str
    stream: str
    prefix: str
    js: Any
    subs: list[Any] = field(default_factory=list)

    async def take(self) -> list[Msg]:
        """Every message in the stream, through an ephemeral pull consumer."""
        info = await self.js.stream_info(self.stream)
        count = int(info.state.messages)
        if count == 0:
            return []
        sub = await self.js.pull_subscribe(f"{self.prefix}.>", stream=self.stream)
        self.subs.append(sub)
        taken: list[Msg] = []
        while len(taken) < count:
            taken.extend(await sub.fetch(count - len(taken), timeout=5))
        return taken


@pytest.fixture
async def jetstream() -> AsyncIterator[NatsTap]:
    """A unique stream name and subject prefix (the relay creates the stream); deleted after."""
    url = _service(NATS_URL, "ORDERTALLY_TEST_NATS_URL")
    tag = uuid.uuid4().hex[:12]
    client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    js = client.jetstream()
    tap = NatsTap(url, f"OT_TEST_{tag}", f"ordertally.test.{tag}", js)
    try:
        yield tap
    finally:
        for sub in tap.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        with contextlib.suppress(NotFoundError):
            await js.delete_stream(tap.stream)
        await client.close()


def _check_nats(msgs: list[Msg], rows: list[Row], prefix: str) -> None:
    """One message per event, carrying its id, subject, envelope body, headers."""
    by_id = {r.event_id: r for r in rows}
    assert sorted((m.headers or {}).get("Nats-Msg-Id", "") for m in msgs) == sorted(by_id)
    for msg in msgs:
        headers = msg.headers or {}
        row = by_id[headers["Nats-Msg-Id"]]
        assert msg.subject == f"{prefix}.{row.event_type}"
        assert headers["content-type"] == "application/json"
        assert headers["type"] == row.event_type
        assert headers["version"] == str(row.body["version"])
        assert json.loads(msg.data) == row.body


async def test_jetstream_receives_every_event_once(
    db: Database, jetstream: NatsTap, configure: Configure
) -> None:
    await _orders(db)
    with pytest.raises(NotFoundError):
        await jetstream.js.stream_info(jetstream.stream)
    await configure(jetstream.url, stream=jetstream.stream, subject_prefix=jetstream.prefix)

    await drain(db, get_settings())

    info = await jetstream.js.stream_info(jetstream.stream)  # created by the relay
    assert info.config.subjects == [f"{jetstream.prefix}.>"]
    rows = await _outbox(db)
    assert {"OrderCreated"} <= {r.event_type for r in rows} and len(rows) >= 3
    assert {r.status for r in rows} == {"done"}
    assert await _relayed(db) == {r.event_id for r in rows}
    _check_nats(await jetstream.take(), rows, jetstream.prefix)


async def test_jetstream_down_keeps_events_pending_then_delivers_once(
    db: Database, jetstream: NatsTap, configure: Configure
) -> None:
    await _orders(db)
    down = _with_port(jetstream.url, _closed_port())
    await configure(
        down, stream=jetstream.stream, subject_prefix=jetstream.prefix, retry_seconds=30
    )

    await drain(db, get_settings())

    rows = await _outbox(db)
    assert rows and {r.status for r in rows} == {"pending"}
    assert {r.attempts for r in rows} == {1}
    assert all("broker.relay: BrokerUnavailable" in (r.last_error or "") for r in rows)
    assert sum("cannot connect to nats://127.0.0.1" in (r.last_error or "") for r in rows) == 1
    assert await _relayed(db) == set()
    assert await _dead_letters(db) == 0
    with pytest.raises(NotFoundError):
        await jetstream.js.stream_info(jetstream.stream)

    await configure(jetstream.url, stream=jetstream.stream, subject_prefix=jetstream.prefix)
    clock.advance(timedelta(hours=1))
    await drain(db, get_settings())

    after = await _outbox(db)
    assert {r.status for r in after} == {"done"}
    assert {r.attempts for r in after} == {1}
    _check_nats(await jetstream.take(), after, jetstream.prefix)

    # The commit "lost" after the broker took them: the relay publishes every event again and
    # JetStream's dedupe window (Nats-Msg-Id = event id) absorbs each one.
    await _forget_relay(db)
    await drain(db, get_settings())
    assert {r.status for r in await _outbox(db)} == {"done"}
    info = await jetstream.js.stream_info(jetstream.stream)
    assert info.state.messages == len(after)
    _check_nats(await jetstream.take(), after, jetstream.prefix)


async def test_rabbitmq_redelivery_keeps_the_event_id(
    db: Database, rabbit: RabbitTap, configure: Configure
) -> None:
    """RabbitMQ has no dedupe: a re-publish arrives again, with the same id and body."""
    await _orders(db)
    await configure(rabbit.url, exchange=rabbit.exchange)
    await drain(db, get_settings())
    rows = await _outbox(db)
    first = await rabbit.take()
    _check_rabbit(first, rows)

    await _forget_relay(db)
    await drain(db, get_settings())
    again = await rabbit.take()
    _check_rabbit(again, rows)
    assert Counter(str(m.message_id) for m in first + again) == {r.event_id: 2 for r in rows}


# --- a connection lost mid-life --------------------------------------------------------------


class Proxy:
    """A TCP forwarder on 127.0.0.1 that can be cut (closing every connection) and restored."""

    def __init__(self, target: str) -> None:
        parts = target.partition("://")[2].rpartition("@")[2].partition("/")[0]
        host, _, port = parts.rpartition(":")
        self.target = (host or "127.0.0.1", int(port))
        self.port = 0
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def _survives_a_cut(db: Database, tap: RabbitTap | NatsTap, configure: Configure) -> None:
    """Deliver through a proxy, cut it (events stay pending), restore it: all delivered once."""
    proxy = Proxy(tap.url)
    await proxy.start()
    via = _with_port(tap.url, proxy.port)
    if isinstance(tap, RabbitTap):
        await configure(via, exchange=tap.exchange)
    else:
        await configure(via, stream=tap.stream, subject_prefix=tap.prefix)
    try:
        await make_order(db)
        await drain(db, get_settings())
        before = await _outbox(db)
        assert {r.status for r in before} == {"done"}

        await proxy.cut()
        await make_order(db, status="paid")
        await drain(db, get_settings())
        pending = [r for r in await _outbox(db) if r.status == "pending"]
        assert pending
        assert all(r.attempts == 1 and "BrokerUnavailable" in (r.last_error or "") for r in pending)

        await proxy.start()  # same port
        clock.advance(timedelta(hours=1))
        await drain(db, get_settings())
        rows = await _outbox(db)
        assert {r.status for r in rows} == {"done"}
        assert {r.event_id for r in before} < {r.event_id for r in rows}
    finally:
        await relay.close()
        if proxy.server is not None and proxy.server.is_serving():
            await proxy.cut()

    if isinstance(tap, RabbitTap):
        _check_rabbit(await tap.take(), rows)
    else:
        _check_nats(await tap.take(), rows, tap.prefix)


async def test_rabbitmq_lost_connection_is_reopened(
    db: Database, rabbit: RabbitTap, configure: Configure
) -> None:
    await _survives_a_cut(db, rabbit, configure)


async def test_jetstream_lost_connection_is_reopened(
    db: Database, jetstream: NatsTap, configure: Configure
) -> None:
    await _survives_a_cut(db, jetstream, configure)
