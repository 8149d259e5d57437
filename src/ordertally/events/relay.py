"""The broker relay: an outbox consumer that publishes every event to RabbitMQ or NATS JetStream.

It is an ordinary consumer of every event type (`ALL_EVENTS`), so it inherits the dispatcher's
guarantees: it runs inside the dispatch transaction, its `processed_event` row is written only
after it returns, and it returns only once the broker holds the message (RabbitMQ publisher
confirm, JetStream publish ack). A broker that is down makes it raise; the event stays pending
and the dispatcher retries it with backoff. Delivery is at least once: the message id is the
event id, JetStream drops re-publishes inside its dedupe window, and RabbitMQ consumers dedupe
by `message_id`.

One connection per process, opened on the first publish, dropped after a failure and reopened
on a later publish (not before `broker_retry_seconds`, so a batch meeting a dead broker fails
fast instead of waiting out a connect timeout per event). FastStream carries the publishes; see
docs/adr/0007-broker-relay.md.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.core.errors import OrdertallyError
from ordertally.core.settings import Settings, get_settings
from ordertally.events.registry import ALL_EVENTS, Envelope, consumer

if TYPE_CHECKING:
    from faststream.nats import NatsBroker
    from faststream.rabbit import RabbitBroker, RabbitExchange

log = logging.getLogger(__name__)

CONSUMER_NAME = "broker.relay"
CONTENT_TYPE = "application/json"


class BrokerUnavailable(OrdertallyError):
    """The broker could not be reached or lost the connection; the event will be retried."""

    status = 503
    code = "broker.unavailable"
    title = "Message broker unavailable"


class BrokerRejected(OrdertallyError):
    """The broker answered but refused the message; the event will be retried."""

    status = 502
    code = "broker.rejected"
    title = "Message broker refused the event"


def redact(url: str) -> str:
    """A broker URL without its credentials, for logs and recorded errors."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def body_of(event: Envelope) -> bytes:
    """The message body: the envelope as JSON."""
    return event.model_dump_json().encode()


class Publisher(Protocol):
    """One broker's connection and publish; the relay adds timeouts and reconnection."""

    rejections: tuple[type[BaseException], ...]

    async def connect(self) -> None: ...

    async def publish(self, event: Envelope) -> None: ...

    async def close(self) -> None: ...


class RabbitPublisher:
    """A durable topic exchange; persistent messages, routing key = event type, confirms on."""

    def __init__(self, url: str, exchange: str, timeout: float) -> None:
        from aio_pika.exceptions import DeliveryError

        self.url = url
        self.exchange_name = exchange
        self.timeout = timeout
        self.rejections: tuple[type[BaseException], ...] = (DeliveryError,)
        self._broker: RabbitBroker | None = None
        self._exchange: RabbitExchange | None = None

    async def connect(self) -> None:
        from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange
        from faststream.rabbit.schemas import Channel

        exchange = RabbitExchange(self.exchange_name, type=ExchangeType.TOPIC, durable=True)
        broker = RabbitBroker(
            self.url,
            timeout=self.timeout,
            fail_fast=True,
            app_id="ordertally",
            default_channel=Channel(publisher_confirms=True),
            logger=None,
        )
        self._broker = broker
        await broker.connect()
        await broker.declare_exchange(exchange)
        self._exchange = exchange

    async def publish(self, event: Envelope) -> None:
        if self._broker is None or self._exchange is None:
            raise BrokerUnavailable("not connected")
        # Returns once RabbitMQ confirms; a nack raises DeliveryError. mandatory=False: an event
        # type nobody has bound a queue for is dropped by the exchange, as topics are.
        await self._broker.publish(
            body_of(event),
            exchange=self._exchange,
            routing_key=event.type,
            mandatory=False,
            persist=True,
            timeout=self.timeout,
            message_id=event.id,
            correlation_id=event.id,
            message_type=event.type,
            content_type=CONTENT_TYPE,
            timestamp=event.occurred_at,
            headers={"type": event.type, "version": event.version},
        )

    async def close(self) -> None:
        broker, self._broker, self._exchange = self._broker, None, None
        if broker is not None:
            await broker.stop()


class NatsPublisher:
    """A JetStream stream on `<prefix>.>` (created if missing); publish acks awaited."""

    def __init__(self, url: str, stream: str, prefix: str, timeout: float) -> None:
        from nats.errors import MaxPayloadError
        from nats.js.errors import APIError

        self.url = url
        self.stream = stream
        self.prefix = prefix
        self.timeout = timeout
        self.rejections: tuple[type[BaseException], ...] = (APIError, MaxPayloadError)
        self._broker: NatsBroker | None = None

    async def connect(self) -> None:
        from faststream.nats import NatsBroker
        from nats.js.errors import BadRequestError, NotFoundError

        # nats-py's own reconnection is off: after a failure the relay drops the connection
        # and opens a new one on a later publish. (With max_reconnect_attempts=0 nats-py would
        # retry the first connect forever; 1 means one immediate retry, then NoServersError.)
        broker = NatsBroker(
            self.url,
            connect_timeout=max(1, math.ceil(self.timeout)),
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            name="ordertally-relay",
            logger=None,
        )
        self._broker = broker
        await broker.connect()
        js = broker.connection.jetstream(timeout=self.timeout)
        try:
            await js.stream_info(self.stream)
        except NotFoundError:
            try:
                await js.add_stream(name=self.stream, subjects=[f"{self.prefix}.>"])
            except BadRequestError:
                await js.stream_info(self.stream)  # another worker created it meanwhile
            else:
                log.info("created JetStream stream %s on %s.>", self.stream, self.prefix)

    async def publish(self, event: Envelope) -> None:
        if self._broker is None:
            raise BrokerUnavailable("not connected")
        ack = await self._broker.publish(
            body_of(event),
            subject=f"{self.prefix}.{event.type}",
            headers={
                "Nats-Msg-Id": event.id,
                "content-type": CONTENT_TYPE,
                "type": event.type,
                "version": str(event.version),
            },
            correlation_id=event.id,
            stream=self.stream,
            timeout=self.timeout,
        )
        if ack.duplicate:
            log.info("JetStream already had event %s (deduplicated)", event.id)

    async def close(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.stop()


def make_publisher(settings: Settings) -> Publisher:
    """The publisher for the configured broker URL."""
    url = settings.broker_url
    scheme = url.partition("://")[0].lower()
    if scheme in {"amqp", "amqps"}:
        return RabbitPublisher(url, settings.broker_exchange, settings.broker_timeout_seconds)
    if scheme in {"nats", "tls"}:
        return NatsPublisher(
            url,
            settings.broker_stream,
            settings.broker_subject_prefix,
            settings.broker_timeout_seconds,
        )
    raise ValueError(f"unsupported broker URL scheme {scheme!r}")


def _config_key(settings: Settings) -> tuple[object, ...]:
    return (
        settings.broker_url,
        settings.broker_exchange,
        settings.broker_stream,
        settings.broker_subject_prefix,
        settings.broker_timeout_seconds,
        settings.broker_retry_seconds,
    )


class Relay:
    """One process's connection to the broker: lazy, timed out, dropped and reopened on failure."""

    def __init__(self, settings: Settings) -> None:
        self.key = _config_key(settings)
        self.where = redact(settings.broker_url)
        self.timeout = settings.broker_timeout_seconds
        self.retry_seconds = settings.broker_retry_seconds
        self.publisher = make_publisher(settings)
        self.loop = asyncio.get_running_loop()
        self._connected = False
        self._lock = asyncio.Lock()
        self._down_until = 0.0
        self._last_error = ""

    async def publish(self, event: Envelope) -> None:
        """Publish one event; returns once the broker has it, raises otherwise."""
        await self._ensure_connected()
        try:
            async with asyncio.timeout(self.timeout):
                await self.publisher.publish(event)
        except self.publisher.rejections as exc:
            raise BrokerRejected(f"{self.where} refused {event.id}: {_describe(exc)}") from exc
        except Exception as exc:
            await self._drop(exc)
            raise BrokerUnavailable(
                f"publish of {event.id} to {self.where} failed: {_describe(exc)}"
            ) from exc

    async def close(self) -> None:
        """Close the connection (worker shutdown, tests)."""
        async with self._lock:
            self._connected = False
            await self._close_quietly()

    async def _ensure_connected(self) -> None:
        if self._connected:
            return
        async with self._lock:
            if self._connected:
                return
            wait = self._down_until - time.monotonic()
            if wait > 0:
                raise BrokerUnavailable(
                    f"{self.where} unreachable ({self._last_error}); next attempt in {wait:.1f}s"
                )
            try:
                async with asyncio.timeout(self.timeout):
                    await self.publisher.connect()
            except Exception as exc:
                self._fail(exc)
                await self._close_quietly()
                raise BrokerUnavailable(
                    f"cannot connect to {self.where}: {_describe(exc)}"
                ) from exc
            self._connected = True
            log.info("broker relay connected to %s", self.where)

    async def _drop(self, exc: BaseException) -> None:
        async with self._lock:
            self._connected = False
            self._fail(exc)
            await self._close_quietly()
        log.warning("broker relay lost %s: %s", self.where, _describe(exc))

    def _fail(self, exc: BaseException) -> None:
        self._last_error = _describe(exc)
        self._down_until = time.monotonic() + self.retry_seconds

    async def _close_quietly(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                await self.publisher.close()
        except Exception as exc:
            log.debug("closing a failed broker connection: %r", exc)


_relay: Relay | None = None


async def current(settings: Settings) -> Relay:
    """This process's relay for the configured broker, replaced when the settings change."""
    global _relay
    relay = _relay
    if relay is not None and relay.loop is asyncio.get_running_loop():
        if relay.key == _config_key(settings):
            return relay
        _relay = Relay(settings)
        await relay.close()
        return _relay
    # None yet, or one whose connection belongs to a finished event loop: abandon it.
    _relay = Relay(settings)
    return _relay


async def close() -> None:
    """Close this process's broker connection, if any."""
    global _relay
    relay, _relay = _relay, None
    if relay is not None and relay.loop is asyncio.get_running_loop():
        await relay.close()


async def relay_event(session: AsyncSession, event: Envelope) -> None:
    """Outbox consumer: publish the event; return only once the broker holds it."""
    settings = get_settings()
    if not settings.broker_url:
        raise BrokerUnavailable("the relay is registered but ORDERTALLY_BROKER_URL is empty")
    relay = await current(settings)
    await relay.publish(event)


def register(settings: Settings) -> bool:
    """Register the relay as a consumer of every event type when a broker is configured."""
    if not settings.broker_url:
        return False
    consumer(CONSUMER_NAME, ALL_EVENTS)(relay_event)
    return True
