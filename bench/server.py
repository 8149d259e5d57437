"""The server under test: a scratch database (an SQLite file or a freshly created PostgreSQL
database), `ordertally migrate`, an API key, stock to sell, and `ordertally serve` in its own
process group, always stopped and dropped at the end."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from bench import payload

HOST = "127.0.0.1"


def ordertally_command() -> list[str]:
    """The `ordertally` console script of the Python running the bench."""
    script = Path(sys.executable).parent / "ordertally"
    if script.exists():
        return [str(script)]
    found = shutil.which("ordertally")
    if found:
        return [found]
    return [sys.executable, "-m", "ordertally"]


def asyncpg_dsn(url: str) -> str:
    """A libpq-style DSN for asyncpg from an SQLAlchemy URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


async def _pg_admin(admin_url: str, statement: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(admin_url), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@dataclass
class Database:
    """A migrated scratch database and the environment every `ordertally` command gets."""

    kind: str  # "sqlite" | "pg"
    url: str
    data_dir: Path
    env: dict[str, str]
    api_key: str = ""
    pg_name: str | None = None
    sqlite_file: Path | None = None
    log_lines: list[str] = field(default_factory=list)

    def cli(self, *args: str, timeout: float = 300) -> str:
        """Run one `ordertally` command against this database; its stdout."""
        done = subprocess.run(
            [*ordertally_command(), *args],
            env=self.env,
            cwd=self.data_dir,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"ordertally {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}"
            )
        return done.stdout


# Rate limits stay on (their cost is part of what is measured) but sized for the bench's load:
# one API key and one address send thousands of requests a second.
BENCH_LIMITS = {
    "ORDERTALLY_RATE_LIMIT_PER_KEY": "1000000/second",
    "ORDERTALLY_RATE_LIMIT_PER_IP": "1000000/second",
}


@contextlib.contextmanager
def scratch_database(
    kind: str, pg_admin_url: str, server_env: dict[str, str]
) -> Iterator[Database]:
    """Create, migrate and hand out a database with an ops API key; drop it afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix=f"ordertally-bench-{kind}-"))
    # A clean environment: no ORDERTALLY_* from the caller's shell, only what the bench sets.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERTALLY_")}
    env["ORDERTALLY_DATA_DIR"] = str(data_dir)
    env["ORDERTALLY_PII_KEY"] = base64.b64encode(secrets.token_bytes(32)).decode()
    pg_name = None
    sqlite_file = None
    if kind == "pg":
        # BENCH_PG_PREFIX: a shared machine's runs name their scratch databases after their owner.
        pg_name = f"{os.environ.get('BENCH_PG_PREFIX', 'ordertally_bench_')}{secrets.token_hex(6)}"
        url = make_url(pg_admin_url).set(database=pg_name).render_as_string(hide_password=False)
    else:
        sqlite_file = data_dir / "bench.db"
        url = f"sqlite+aiosqlite:///{sqlite_file}"
    env["ORDERTALLY_DATABASE_URL"] = url
    env.update(BENCH_LIMITS)
    env.update(server_env)
    db = Database(kind, url, data_dir, env, pg_name=pg_name, sqlite_file=sqlite_file)
    try:
        if pg_name is not None:
            asyncio.run(_pg_admin(pg_admin_url, f'CREATE DATABASE "{pg_name}"'))
        db.cli("migrate")
        db.api_key = (
            db.cli("apikey", "create", "--name", "bench", "--role", "ops").splitlines()[-1].strip()
        )
        yield db
    finally:
        if pg_name is not None:
            with contextlib.suppress(Exception):
                asyncio.run(
                    _pg_admin(pg_admin_url, f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)')
                )
        shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def existing_database(
    url: str, pii_key: str, server_env: dict[str, str], key_name: str = "bench"
) -> Iterator[Database]:
    """A database made beforehand (e.g. by bench/preload.py, with the PII key its rows were
    sealed with), migrated to head, with a new ops API key; kept afterwards."""
    data_dir = Path(tempfile.mkdtemp(prefix="ordertally-bench-pg-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORDERTALLY_")}
    env["ORDERTALLY_DATA_DIR"] = str(data_dir)
    env["ORDERTALLY_PII_KEY"] = pii_key
    env["ORDERTALLY_DATABASE_URL"] = url
    env.update(BENCH_LIMITS)
    env.update(server_env)
    db = Database("pg", url, data_dir, env, pg_name=make_url(url).database)
    try:
        db.cli("migrate")
        db.api_key = (
            db.cli(
                "apikey", "create", "--name", f"{key_name}-{secrets.token_hex(3)}", "--role", "ops"
            )
            .splitlines()[-1]
            .strip()
        )
        yield db
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)


def stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process's group, SIGKILL it after 15 s, then kill whatever is left in the
    group (workers whose supervisor died first)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


class Server:
    """`ordertally serve --no-worker` on a free port, in its own process group."""

    def __init__(self, db: Database, workers: int) -> None:
        self.db = db
        self.workers = workers
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = db.data_dir / f"serve-{self.port}.log"

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        command = [
            *ordertally_command(),
            "serve",
            "--no-worker",
            "--host",
            HOST,
            "--port",
            str(self.port),
        ]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                command,
                env=self.db.env,
                cwd=self.db.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._wait_healthy(60)
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                status, _ = self.request("GET", "/healthz", None, timeout=1)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not healthy after {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL what is left after 15 s."""
        process, self.process = self.process, None
        if process is None:
            return
        stop_group(process)
        if self.workers > 1:
            # `serve --workers N` keeps merged metrics in a per-port directory it never removes.
            shutil.rmtree(Path(tempfile.gettempdir()) / f"ordertally-metrics-{self.port}", True)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def request(
        self, method: str, path: str, body: dict[str, Any] | None, timeout: float = 30
    ) -> tuple[int, Any]:
        """One small request with the API key (setup and checks, not load)."""
        headers = {"Authorization": f"Bearer {self.db.api_key}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            f"http://{HOST}:{self.port}{path}", data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")

    def seed_stock(self, buckets: int) -> None:
        """One warehouse holding the order's SKUs, each spread over `buckets` stock rows."""
        steps: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/api/v1/warehouses", payload.WAREHOUSE)
        ]
        for sku, (name, name_en) in payload.CATALOG.items():
            steps.append(
                ("POST", "/api/v1/catalog/skus", {"code": sku, "name": name, "name_en": name_en})
            )
        steps.append(
            (
                "POST",
                "/api/v1/catalog/skus",
                {
                    "code": payload.BUNDLE,
                    "name": "龙井茶具礼盒",
                    "name_en": "Longjing gift box",
                    "components": [
                        {"sku": sku, "quantity": quantity}
                        for sku, (quantity, _) in payload.LINES.items()
                    ],
                },
            )
        )
        for sku in payload.LINES:
            steps.append(
                ("PUT", f"/api/v1/stock/{sku}/settings", {"warehouse": "SH01", "buckets": buckets})
            )
            steps.append(
                (
                    "POST",
                    "/api/v1/stock/movements",
                    {
                        "warehouse": payload.WAREHOUSE["code"],
                        "sku": sku,
                        "kind": "receipt",
                        "quantity": payload.STOCK_UNITS,
                        "reason": "benchmark stock",
                    },
                )
            )
        for method, path, body in steps:
            status, answer = self.request(method, path, body)
            if status not in (200, 201):
                raise RuntimeError(
                    f"seeding {method} {path} answered {status}: {answer}\n{self.log_tail()}"
                )


class Process:
    """Another `ordertally` command (a worker, a simulator) in its own process group, logging
    into the database's data directory; stopped like the server."""

    def __init__(self, db: Database, *args: str, name: str) -> None:
        self.db = db
        self.args = args
        self.name = name
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = db.data_dir / f"{name}.log"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> Process:
        """Start the command; returns at once."""
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [*ordertally_command(), *self.args],
                env=self.db.env,
                cwd=self.db.data_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        """Still running."""
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL what is left after 15 s."""
        process, self.process = self.process, None
        if process is not None:
            stop_group(process)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
