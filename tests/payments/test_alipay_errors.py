"""Alipay's public errors come under the top-level `error_response` key (not
`<method>_response`): the call fails with Alipay's own code, over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Response

from ordertally.payments.providers import ProviderCallFailed, ProviderRefused, alipay
from ordertally.simkit.server import serve

pytestmark = pytest.mark.anyio

# Alipay's documented public error for an unknown app id (open.alipay.com, 公共错误码 40002).
INVALID_APP_ID = {
    "code": "40002",
    "msg": "Invalid Arguments",
    "sub_code": "isv.invalid-app-id",
    "sub_msg": "无效的AppID参数",
}

ALIPAY_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
APP_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
answers: list[bytes] = []


def _gateway_app() -> FastAPI:
    app = FastAPI()

    @app.post("/gateway.do")
    async def gateway() -> Response:
        return Response(answers[-1], media_type="application/json;charset=utf-8")

    return app


@pytest.fixture(scope="module")
def gateway_url() -> Iterator[str]:
    with serve(_gateway_app()) as url:
        yield f"{url}/gateway.do"


def _config(url: str) -> alipay.Config:
    return alipay.Config(
        app_id="2021000000000000",
        seller_id="2088000000000000",
        alipay_key=ALIPAY_KEY.public_key(),
        app_key=APP_KEY,
        gateway=url,
        notify_max_age=86400,
        timeout=10,
    )


def _signed(doc: dict[str, Any], key: rsa.RSAPrivateKey) -> bytes:
    raw = orjson.dumps(doc).decode()
    config = alipay.Config("a", "s", key.public_key(), key, "", 0, 1)
    return f'{{"error_response":{raw},"sign":"{alipay.sign(config, raw)}"}}'.encode()


async def test_unsigned_error_response_fails_with_alipays_code(gateway_url: str) -> None:
    # Given the gateway answers a query with Alipay's public error, unsigned
    answers.append(orjson.dumps({"error_response": INVALID_APP_ID}))
    # When we query a trade
    with pytest.raises(ProviderRefused) as refused:
        await alipay.query(_config(gateway_url), "OT2612040001P01")
    # Then the error carries Alipay's code, not "answer has no ..._response"
    assert (refused.value.code, refused.value.sub_code, refused.value.sub_msg) == (
        "40002",
        "isv.invalid-app-id",
        "无效的AppID参数",
    )
    assert str(refused.value) == (
        "alipay alipay.trade.query refused: 40002 isv.invalid-app-id 无效的AppID参数"
    )


async def test_signed_error_response_must_verify(gateway_url: str) -> None:
    # Given a signed error answer, once by Alipay's key and once by another key
    answers.append(_signed(INVALID_APP_ID, ALIPAY_KEY))
    with pytest.raises(ProviderRefused) as refused:
        await alipay.query(_config(gateway_url), "OT2612040001P01")
    assert refused.value.code == "40002"
    forged = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    answers.append(_signed(INVALID_APP_ID, forged))
    # Then the forged one is refused as unverifiable, not as Alipay's error
    with pytest.raises(ProviderCallFailed) as failed:
        await alipay.query(_config(gateway_url), "OT2612040001P01")
    assert not isinstance(failed.value, ProviderRefused)
    assert str(failed.value) == "alipay alipay.trade.query: answer signature does not verify"
