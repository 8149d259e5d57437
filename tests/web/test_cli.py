"""`ordertally user create` and `ordertally user bootstrap` (the first admin of `make run`)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from typer.testing import CliRunner

from ordertally.auth import users
from ordertally.core.db import Database
from ordertally.core.settings import get_settings

pytestmark = pytest.mark.anyio


async def _run(*args: str, stdin: str | None = None) -> Any:
    from ordertally.cli import app

    runner = CliRunner()
    # The command runs its own event loop and database engine, as from a shell.
    return await anyio.to_thread.run_sync(lambda: runner.invoke(app, list(args), input=stdin))


async def _usernames(db: Database) -> list[tuple[str, str]]:
    async with db.transaction(write=False) as session:
        return [(u.username, u.role) for u in await users.list_users(session)]


async def test_user_create_reads_the_password_from_stdin(db: Database) -> None:
    # When a user is created with a password on stdin
    result = await _run(
        "user", "create", "LiSi", "--role", "finance", "--password-stdin", stdin="a-long-secret\n"
    )
    # Then it exists, lower-cased, and signs in with that password
    assert result.exit_code == 0, result.output
    assert await _usernames(db) == [("lisi", "finance")]
    async with db.transaction() as session:
        _, signed = await users.sign_in(session, "lisi", "a-long-secret", "127.0.0.1")
    assert signed.role == "finance"
    # And a bad role is refused without creating anything
    bad = await _run(
        "user", "create", "wangwu", "--role", "boss", "--password-stdin", stdin="x" * 12
    )
    assert bad.exit_code == 2
    assert await _usernames(db) == [("lisi", "finance")]


async def test_bootstrap_creates_one_first_admin_and_prints_its_password_once(
    db: Database,
) -> None:
    # When bootstrap runs on an empty database, then again
    first = await _run("user", "bootstrap")
    second = await _run("user", "bootstrap")
    # Then one admin exists, whose printed password signs in
    assert first.exit_code == 0 and second.exit_code == 0
    assert await _usernames(db) == [("admin", "admin")]
    saved = (get_settings().data_dir / "first-admin.txt").read_text()
    password = saved.split("password: ")[1].strip()
    assert password in first.output
    assert password not in second.output and "already exist" in second.output
    async with db.transaction() as session:
        _, signed = await users.sign_in(session, "admin", password, "127.0.0.1")
    assert signed.role == "admin"
