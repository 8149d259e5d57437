"""Pinduoduo receiver decryption: the configured decrypt service (`config.decrypt`: `pop`, the
platform's pdd.open.decrypt.batch at the account's router, or `hook`, the merchant's relay at
`config.decrypt_url`), asked with no transaction open.

A pull decrypts each page before storing it (`decrypt_orders`). An order it could not decrypt
was created with a blocking `address_not_decrypted` hold; `retry_held` asks again for those
orders (claim in a short read, ask outside any transaction, record each order's answer in its
own transaction: its encrypted columns and the hold resolved). Masked columns never change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson

from ordertally.channels import service
from ordertally.channels.adapters import pinduoduo
from ordertally.channels.adapters.common import AdapterError
from ordertally.channels.canonical import CanonicalOrder
from ordertally.channels.errors import InvalidAccount
from ordertally.channels.models import ChannelAccount
from ordertally.core import outbound
from ordertally.core.crypto import PiiCipher, get_cipher
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.exceptions import service as exceptions_service
from ordertally.orders import queries as order_queries
from ordertally.orders import service as orders_service
from ordertally.orders.contact import PII_ADDRESS, PII_NAME, PII_PHONE

HOLD = "address_not_decrypted"
CIPHER_PREFIX = "platform_ciphertext_"
Pair = tuple[str, str]  # (data_tag = order number, ciphertext)
Send = Callable[[Callable[[], Awaitable[httpx.Response]]], Awaitable[httpx.Response]]


def client_for(
    account: ChannelAccount, http: httpx.AsyncClient
) -> pinduoduo.PinduoduoClient | None:
    """The account's decrypt service as a POP client, or None when none is configured (the
    default: Pinduoduo answers the decrypt API only inside its own cloud)."""
    config = account.config or {}
    mode = str(config.get("decrypt") or "none")
    if mode == "none":
        return None
    if mode == "pop":
        url = str(config.get("base_url") or "")
    elif mode == "hook":
        url = str(config.get("decrypt_url") or "")
    else:
        raise InvalidAccount(f"account {account.code}: decrypt must be none, pop or hook")
    if not url:
        raise InvalidAccount(f"account {account.code}: decrypt={mode} needs its URL")
    credentials = service.credentials_of(account)
    return pinduoduo.PinduoduoClient(
        http,
        url,
        str(config.get("client_id") or ""),
        credentials.get("client_secret") or "",
        credentials.get("access_token") or "",
    )


async def _direct(call: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
    return await call()


async def decrypt_pairs(
    client: pinduoduo.PinduoduoClient, pairs: list[Pair], send: Send = _direct
) -> tuple[dict[Pair, str], dict[Pair, str]]:
    """Ask the service for every pair, in batches of 100; (plaintexts, why each other failed).
    A batch the service does not answer (HTTP error, timeout, error_response) fails whole."""
    answers: dict[Pair, str] = {}
    failures: dict[Pair, str] = {}
    for start in range(0, len(pairs), pinduoduo.DECRYPT_BATCH):
        batch = pairs[start : start + pinduoduo.DECRYPT_BATCH]
        try:
            response = await send(lambda b=batch: client.decrypt_batch(b))  # type: ignore[misc]
            plain, failed = pinduoduo.decrypt_answer(response, batch)
        except (httpx.HTTPError, AdapterError) as exc:
            plain, failed = (
                {},
                dict.fromkeys(batch, f"decrypt service: {exc or type(exc).__name__}"),
            )
        answers.update(plain)
        failures.update(failed)
    return answers, failures


def _outcome(
    fields: dict[str, str], external_id: str, answers: dict[Pair, str], failures: dict[Pair, str]
) -> tuple[dict[str, str], str]:
    """(field -> plaintext, "") when every field was answered, else ({}, why)."""
    keys = {name: (external_id, sealed) for name, sealed in fields.items()}
    if all(k in answers for k in keys.values()):
        return {name: answers[k] for name, k in keys.items()}, ""
    errors = sorted({failures.get(k, "no answer") for k in keys.values() if k not in answers})
    return {}, "; ".join(errors)[:500]


async def decrypt_orders(
    client: pinduoduo.PinduoduoClient, orders: list[CanonicalOrder], send: Send = _direct
) -> tuple[list[CanonicalOrder], int, int]:
    """The page's orders with `decrypted` (all their fields answered) or `decrypt_error`;
    also how many ciphertexts were answered and how many orders were not."""
    pairs = [(o.external_id, c) for o in orders for c in o.encrypted.values()]
    answers, failures = await decrypt_pairs(client, pairs, send) if pairs else ({}, {})
    result: list[CanonicalOrder] = []
    decrypted = undecrypted = 0
    for order in orders:
        if not order.encrypted:
            result.append(order)
            continue
        plain, error = _outcome(order.encrypted, order.external_id, answers, failures)
        if plain:
            decrypted += len(plain)
            result.append(dataclasses.replace(order, decrypted=plain))
        else:
            undecrypted += 1
            result.append(dataclasses.replace(order, decrypt_error=error))
    return result, decrypted, undecrypted


def recipient_columns(
    cipher: PiiCipher, platform: str, doc: dict[str, Any], plain: dict[str, str]
) -> dict[str, str]:
    """An order's encrypted recipient columns from its address document and the plaintext."""
    from ordertally.channels.ingest import phone_fields

    name = plain.get("receiver_name") or str(doc.get("name") or "")
    line1 = plain.get("receiver_address") or plain.get("address") or str(doc.get("line1") or "")
    phone, bidx, _, last4 = phone_fields(
        cipher,
        plain.get("receiver_phone") or str(doc.get("phone") or ""),
        platform=platform,
        buyer_key="",
    )
    address = {
        **doc,
        "name": name,
        "phone": phone,
        "line1": line1,
        "platform_decrypted": sorted(plain),
    }
    return {
        "customer_name_enc": cipher.encrypt(name or "-", PII_NAME),
        "customer_phone_enc": cipher.encrypt(phone, PII_PHONE),
        "customer_phone_bidx": bidx,
        "customer_phone_last4": last4,
        "shipping_address_enc": cipher.encrypt(orjson.dumps(address).decode(), PII_ADDRESS),
    }


async def retry_held(
    db: Database,
    account_code: str,
    *,
    http: httpx.AsyncClient | None = None,
    limit: int = 100,
    send: Send = _direct,
) -> list[dict[str, Any]]:
    """Ask the account's decrypt service again for its orders held `address_not_decrypted`
    (oldest first, at most `limit`); each answered order gets its encrypted recipient and its
    hold resolved in its own transaction. Returns one outcome per order."""
    async with db.transaction(write=False) as session:
        account = await service.get_account(session, account_code)
        held_ids = await exceptions_service.orders_with_open_case(session, HOLD)
        orders = [
            o for o in await order_queries.get_many(session, held_ids) if o.channel == account.code
        ][:limit]
        docs = {o.id: order_queries.shipping_address(o) for o in orders}
        cases = {
            o.id: [
                c.id for c in await exceptions_service.open_cases(session, o.id) if c.type == HOLD
            ]
            for o in orders
        }
    client = client_for(
        account,
        http or outbound.client("channels", timeout=get_settings().channels_http_timeout_seconds),
    )
    if client is None or not orders:
        return []
    fields = {
        o.id: {
            k.removeprefix(CIPHER_PREFIX): str(v)
            for k, v in docs[o.id].items()
            if k.startswith(CIPHER_PREFIX)
        }
        for o in orders
    }
    pairs = [(str(o.external_id), c) for o in orders for c in fields[o.id].values()]
    answers, failures = await decrypt_pairs(client, pairs, send)
    cipher = get_cipher()
    outcomes: list[dict[str, Any]] = []
    for order in orders:
        plain, error = _outcome(fields[order.id], str(order.external_id), answers, failures)
        if not plain:
            outcomes.append({"order_no": order.order_no, "status": "held", "error": error})
            continue
        async with db.transaction() as session:
            values = recipient_columns(cipher, account.platform, docs[order.id], plain)
            await orders_service.set_recipient(
                session, order.id, values, f"channel:{account.code}", "recipient decrypted"
            )
            for case_id in cases[order.id]:
                await exceptions_service.resolve(
                    session, case_id, f"channel:{account.code}", "recipient decrypted"
                )
        outcomes.append({"order_no": order.order_no, "status": "decrypted", "error": None})
    return outcomes
