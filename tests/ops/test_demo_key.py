"""Issue 14 (Low): the demo admin key is printed once, when `ordertally demo` creates it; every
`ordertally serve` after that says where the key is kept, never the key itself. Real processes
against the test database, as a newcomer runs them."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ordertally.core.db import Database
from tests.conftest import empty_tables

pytestmark = pytest.mark.anyio


def _env(data_dir: Path) -> dict[str, str]:
    return {**os.environ, "ORDERTALLY_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1"}


def _demo(data_dir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ordertally", "demo", "--orders", "3"],
        capture_output=True,
        text=True,
        timeout=180,
        env=_env(data_dir),
        check=False,
    )


def _serve_banner(data_dir: Path) -> str:
    """What `ordertally serve` prints before it answers (stopped once it has said it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ordertally", "serve", "--port", str(port), "--no-worker"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(data_dir),
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "demo API key" in line:
                break
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return "".join(lines)


async def test_the_demo_key_is_shown_once_and_serve_only_says_where_it_is(
    db: Database, tmp_path: Path
) -> None:
    # Given a fresh database (no warehouse yet)
    await empty_tables(db)
    # When the demo is loaded
    loaded = _demo(tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    key = (tmp_path / "demo-api-key.txt").read_text().strip()
    # Then the key is printed that once, and kept in a file only its owner reads
    assert key.startswith("ot_")
    assert loaded.stdout.count(key) == 1
    assert (tmp_path / "demo-api-key.txt").stat().st_mode & 0o777 == 0o600
    # And a later `serve` names the file, not the key
    banner = _serve_banner(tmp_path)
    assert "demo API key (admin) kept in" in banner, banner
    assert key not in banner
