"""Finding: keys could not be listed or revoked, and a revoked key kept working for up to 30 s
(each process's key cache)."""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ordertally.core.db import Database
from tests.conftest import ONLY_SQLITE
from tests.factories import auth
from tests.live import CLI, ordertally_processes

pytestmark = pytest.mark.anyio


async def test_admin_lists_and_revokes_keys_and_others_may_not(
    client: httpx.AsyncClient, keys: dict[str, str], db: Database
) -> None:
    # Given one key per role
    listing = await client.get("/api/v1/auth/keys", headers=auth(keys["admin"]))
    by_name = {k["name"]: k for k in listing.json()["items"]}
    ops_id = by_name["ops-tester"]["id"]
    # When ops tries to list and revoke, then admin revokes ops' key
    ops_list = await client.get("/api/v1/auth/keys", headers=auth(keys["ops"]))
    ops_revoke = await client.post(f"/api/v1/auth/keys/{ops_id}/revoke", headers=auth(keys["ops"]))
    before = await client.get("/api/v1/orders", headers=auth(keys["ops"]))
    revoked = await client.post(f"/api/v1/auth/keys/{ops_id}/revoke", headers=auth(keys["admin"]))
    after = await client.get("/api/v1/orders", headers=auth(keys["ops"]))
    unknown = await client.post("/api/v1/auth/keys/999999/revoke", headers=auth(keys["admin"]))
    # Then only admin manages keys, no hash is shown, and the revoked key is refused at once
    assert listing.status_code == 200 and len(by_name) == 5
    assert all("key_hash" not in k and k["revoked_at"] is None for k in by_name.values())
    assert (ops_list.status_code, ops_revoke.status_code, before.status_code) == (403, 403, 200)
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    assert after.status_code == 401
    assert (unknown.status_code, unknown.json()["code"]) == (404, "auth.key_not_found")


@pytest.fixture
def two_servers(tmp_path: Path) -> Iterator[tuple[str, str, dict[str, str]]]:
    """Two `ordertally serve` processes on one SQLite file, key caches at the default 30 s."""
    from ordertally.ops.migrations import upgrade

    url = f"sqlite+aiosqlite:///{tmp_path / f'two-{uuid.uuid4().hex[:6]}.db'}"
    upgrade(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERTALLY_")}
    env |= {
        "ORDERTALLY_DATABASE_URL": url,
        "ORDERTALLY_DATA_DIR": str(tmp_path),
        "ORDERTALLY_PII_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "ORDERTALLY_API_KEY_CACHE_SECONDS": "30",
    }
    raw: dict[str, str] = {}
    for role in ("admin", "ops"):
        out = subprocess.run(
            [*CLI, "apikey", "create", "--name", role, "--role", role],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        raw[role] = out.stdout.strip().splitlines()[-1]
    with ordertally_processes(env, apis=2) as (a, b):
        yield a, b, raw


def test_a_key_revoked_through_one_process_is_refused_by_the_other_at_once(
    two_servers: tuple[str, str, dict[str, str]],
) -> None:
    a, b, raw = two_servers
    # Given the ops key cached by process B (30 s cache)
    assert httpx.get(f"{b}/api/v1/orders", headers=auth(raw["ops"])).status_code == 200
    assert httpx.get(f"{b}/api/v1/orders", headers=auth(raw["ops"])).status_code == 200
    keys = httpx.get(f"{a}/api/v1/auth/keys", headers=auth(raw["admin"])).json()["items"]
    ops_id = next(k["id"] for k in keys if k["role"] == "ops")
    # When admin revokes it through process A
    revoked = httpx.post(f"{a}/api/v1/auth/keys/{ops_id}/revoke", headers=auth(raw["admin"]))
    # Then the very next request through B is refused, and through A too
    assert revoked.status_code == 200
    assert httpx.get(f"{b}/api/v1/orders", headers=auth(raw["ops"])).status_code == 401
    assert httpx.get(f"{a}/api/v1/orders", headers=auth(raw["ops"])).status_code == 401
    # and the admin key, cached as well, still works on both
    assert httpx.get(f"{b}/api/v1/orders", headers=auth(raw["admin"])).status_code == 200


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, env=os.environ.copy()
    )


@ONLY_SQLITE  # the service under the CLI is tested on both databases through the API
async def test_the_cli_creates_scoped_keys_lists_and_revokes_them(db: Database) -> None:
    from ordertally.auth.service import Authenticator
    from ordertally.core.errors import Unauthenticated

    # Given a key scoped to two warehouses, created on the command line
    created = _cli(
        "apikey", "create", "--name", "packer", "--role", "warehouse",
        "--warehouse", "WH1", "--warehouse", "WH2",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    raw = created.stdout.strip().splitlines()[-1]
    principal = await Authenticator(db, 0).authenticate(f"bearer {raw}")
    assert principal.warehouses == ("WH1", "WH2")
    # When it is listed, revoked, listed again, and an unknown key is revoked
    listed = _cli("apikey", "list")
    revoked = _cli("apikey", "revoke", str(principal.key_id))
    relisted = _cli("apikey", "list")
    unknown = _cli("apikey", "revoke", "999999")
    # Then the list shows it with its scope (never the key), then revoked, and it stops working
    assert listed.returncode == 0 and raw not in listed.stdout
    assert f"{principal.key_id}\tpacker\twarehouse\t{raw[:10]}…\tWH1,WH2\tactive" in listed.stdout
    assert revoked.returncode == 0 and "revoked API key" in revoked.stdout
    assert "\tWH1,WH2\trevoked " in relisted.stdout
    assert unknown.returncode == 2 and "no API key 999999" in unknown.stderr
    with pytest.raises(Unauthenticated):
        await Authenticator(db, 30).authenticate(f"Bearer {raw}")
