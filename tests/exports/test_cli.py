"""`ordertally export` and `ordertally analytics rebuild`, run as an operator would: a real
process against the database (once, on SQLite: the service paths run on both databases in
test_exports.py and tests/analytics)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select

from ordertally.analytics.service import TIMELINE_EVENTS
from ordertally.core.db import Database
from ordertally.core.settings import get_settings
from ordertally.events.dispatcher import drain
from ordertally.events.models import OutboxEvent
from ordertally.exports import service
from ordertally.exports.models import ExportAudit
from tests.conftest import ONLY_SQLITE
from tests.factories import make_order

pytestmark = pytest.mark.anyio


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordertally", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=os.environ.copy(),
        check=False,
    )


@ONLY_SQLITE  # the command line is the same on both databases; it runs once
async def test_export_and_rebuild_from_the_command_line(db: Database) -> None:
    # Given two orders, their events delivered
    await make_order(db, status="paid")
    await make_order(db)
    await drain(db, get_settings())
    # When the operator exports the orders as XLSX from the command line
    result = _cli("export", "orders", "--format", "xlsx", "--actor", "night-shift")
    # Then it ends with the manifest, the file is there, and the audit row says who ran it
    assert result.returncode == 0, result.stderr
    manifest = json.loads(result.stdout[result.stdout.index("{") :])
    assert (manifest["row_count"], manifest["format"]) == (2, "xlsx")
    async with db.transaction(write=False) as session:
        audit = await session.scalar(select(ExportAudit))
    assert audit is not None
    assert (audit.state, audit.actor_id, audit.rows_done) == ("done", "night-shift", 2)
    assert (service.export_dir() / f"{audit.export_no}.xlsx").is_file()
    # When the analytics read models are rebuilt from the event log
    result = _cli("analytics", "rebuild")
    # Then every event of the timelines in the log was replayed (2 created, 1 paid, and the
    # allocation when the fulfilment consumer is wired in this test session)
    async with db.transaction(write=False) as session:
        logged = await session.scalar(
            select(func.count())
            .select_from(OutboxEvent)
            .where(OutboxEvent.event_type.in_(list(TIMELINE_EVENTS)))
        )
    assert logged is not None and logged >= 3
    assert result.returncode == 0, result.stderr
    assert f"replayed {logged} events" in result.stdout
