"""The JSON webhook sent on the pooled client is the request Apprise's own plugin sends for the
same URL: checked by sending one message each way to a live receiver and comparing."""

from __future__ import annotations

import asyncio
import base64
import logging

import apprise
import pytest

from ordertally.notify import webhook
from tests.notify.conftest import Receiver

pytestmark = pytest.mark.anyio

TITLE = "订单已支付：SO20260301000001"
BODY = "订单 SO20260301000001 已于 2026-03-01 16:00 (Asia/Shanghai) 完成支付，请安排发货。\n第二行"
COMPARED = ("content-type", "user-agent", "authorization", "x-ordertally-notification-id", "x-shop")


def _through_apprise(url: str) -> bool:
    sender = apprise.Apprise()
    assert sender.add(url)
    return bool(sender.notify(body=BODY, title=TITLE, log_level=logging.WARNING))


@pytest.mark.parametrize(
    "suffix",
    [
        "/ops",
        "/ops/deep?method=PUT",
        "/ops?+X-Shop=tea&:type=&:version=schema&:source=ordertally&-page=2",
    ],
)
async def test_the_pooled_send_is_the_request_apprise_sends(
    receiver: Receiver, suffix: str
) -> None:
    # Given one Apprise JSON URL with credentials, and the id header the sender adds
    url = receiver.url.replace("http://", "json://shop:s3cret@", 1) + suffix
    with_id = url + ("&" if "?" in url else "?") + "+X-Ordertally-Notification-Id=42"
    # When Apprise sends a message to it, and then the pooled client sends the same one
    assert await asyncio.to_thread(_through_apprise, with_id)
    hook = webhook.parse(url)
    assert hook is not None
    answer = await webhook.send(
        hook, TITLE, BODY, {"X-Ordertally-Notification-Id": "42"}, limit_seconds=5
    )
    # Then both were taken, and the receiver saw the same method, URL, document and headers
    assert answer == webhook.Answer(True)
    assert receiver.attempts == 2
    assert receiver.methods[0] == receiver.methods[1]
    assert receiver.urls[0] == receiver.urls[1]
    assert receiver.received[0] == receiver.received[1]
    first, second = ({k: h.get(k) for k in COMPARED} for h in receiver.headers)
    assert first == second
    assert second["authorization"] == "Basic " + base64.b64encode(b"shop:s3cret").decode()
    assert second["x-ordertally-notification-id"] == "42"
    assert receiver.received[1]["message"] == BODY


def test_what_the_pooled_client_does_not_send() -> None:
    # Given URLs Apprise must keep sending itself: another scheme, no certificate check
    assert webhook.parse("mailto://127.0.0.1:2525?from=a@b.example&to=c@d.example") is None
    assert webhook.parse("jsons://hooks.example/ops?verify=no") is None
    # And a checked HTTPS one the pooled client takes
    hook = webhook.parse("jsons://hooks.example:8443/ops?cto=2&rto=3")
    assert hook is not None
    assert (hook.method, hook.url, hook.connect_timeout, hook.read_timeout) == (
        "POST",
        "https://hooks.example:8443/ops",
        2.0,
        3.0,
    )


async def test_a_refusal_and_an_absent_receiver_are_failures(receiver: Receiver) -> None:
    # Given a receiver that refuses the next request, and a port nobody listens on
    from ordertally.simkit.server import free_port

    receiver.fail(1, status=503)
    hook = webhook.parse(receiver.apprise_url())
    gone = webhook.parse(f"json://127.0.0.1:{free_port()}/hook")
    assert hook is not None and gone is not None
    # When a message is sent to each
    refused = await webhook.send(hook, TITLE, BODY, {}, limit_seconds=2)
    absent = await webhook.send(gone, TITLE, BODY, {}, limit_seconds=2)
    # Then the refusal names the status, the absent receiver is unreachable; nothing was taken
    assert refused == webhook.Answer(False, error="json: HTTP 503")
    assert absent == webhook.Answer(False, error="json: ConnectError", unreachable=True)
    assert receiver.received == []
