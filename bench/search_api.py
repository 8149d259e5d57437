"""`python -m bench.search_api --manifest M`: the API's own CPU per search request, in one
process: the app (its middlewares, routing, authentication, the search, the JSON) driven as an
ASGI callable by --concurrency searchers cycling through the manifest's queries, against the
manifest's database (PostgreSQL or SQLite). No HTTP server and no load generator share the
process, so the figure is the app's CPU per request (getrusage of this process, the driver's
client side included) without the server's protocol work, and holds on a loaded machine better
than a closed loop over HTTP. PostgreSQL's CPU is not counted (`bench.search` measures it).

`--profile` samples the process with py-spy (native frames) during the measured requests and
prints the summary of `bench.profile`. `--dump FILE` writes every query's status and body
instead of measuring (to compare two trees' answers: the same bytes or not).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bench.search_engine import use_manifest


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class _Lifespan:
    """The app's lifespan run as a server runs it (start-up: the warm-up, the route table)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.started = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def _receive(self) -> dict[str, Any]:
        return await self.inbox.get()

    async def _send(self, message: dict[str, Any]) -> None:
        if message["type"].startswith("lifespan.startup"):
            self.started.set()

    async def start(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = asyncio.create_task(self.app(scope, self._receive, self._send))
        await self.inbox.put({"type": "lifespan.startup"})
        await self.started.wait()

    async def stop(self) -> None:
        await self.inbox.put({"type": "lifespan.shutdown"})
        if self.task is not None:
            await self.task


async def _search(app: Any, key: str, q: str, limit: int) -> tuple[int, bytes]:
    """One GET /api/v1/search through the app's ASGI callable: (status, body)."""
    query = urllib.parse.urlencode({"q": q, "limit": limit}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/search",
        "raw_path": b"/api/v1/search",
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"127.0.0.1"), (b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return int(sent[0]["status"]), body


def _sample(raw: Path) -> subprocess.Popen[bytes]:
    """py-spy on this process (native frames) until it is interrupted."""
    from bench import profile

    return subprocess.Popen(
        profile.command(os.getpid(), 3600, raw, subprocesses=False, native=True),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def _run(args: argparse.Namespace, manifest: dict[str, Any]) -> dict[str, Any]:
    from ordertally.app import create_app
    from ordertally.auth import service as auth_service

    app = create_app()
    lifespan = _Lifespan(app)
    await lifespan.start()
    db = app.state.db
    async with db.transaction() as session:
        key_id, key = await auth_service.create_api_key(session, "bench-search-api", "cs")
    queries = [q["q"] for q in manifest["queries"]]
    try:
        answers = [await _search(app, key, q, args.limit) for q in queries]  # warm every query
        if args.dump:
            pairs = zip(queries, answers, strict=True)
            return {"dump": [[q, status, body.decode()] for q, (status, body) in pairs]}
        statuses: dict[int, int] = {}

        async def searcher(first: int) -> None:
            for n in range(first, args.requests, args.concurrency):
                status, _ = await _search(app, key, queries[n % len(queries)], args.limit)
                statuses[status] = statuses.get(status, 0) + 1

        sampler = None
        raw = Path(tempfile.mkdtemp(prefix="search-api-")) / "profile.txt"
        if args.profile:
            sampler = _sample(raw)
            await asyncio.sleep(1.0)  # py-spy attaches
        load = os.getloadavg()[0]
        cpu, wall = _cpu(), time.perf_counter()
        await asyncio.gather(*(searcher(n) for n in range(args.concurrency)))
        cpu, wall = _cpu() - cpu, time.perf_counter() - wall
        result: dict[str, Any] = {
            "database": manifest.get("engine", "pg"),
            "orders": manifest["orders"],
            "requests": args.requests,
            "concurrency": args.concurrency,
            "statuses": statuses,
            "cpu_ms_per_search": round(1000 * cpu / args.requests, 3),
            "wall_ms_per_search": round(1000 * wall / args.requests, 3),
            "load_1m": round(load, 2),
        }
        if sampler is not None:
            from bench import profile

            sampler.send_signal(2)  # SIGINT: py-spy writes what it has
            sampler.wait(timeout=60)
            print(profile.render(profile.analyse(raw)), file=sys.stderr)
        return result
    finally:
        async with db.transaction() as session:
            await auth_service.revoke_api_key(session, key_id)
        await lifespan.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--dump", help="write each query's status and body to this file instead")
    args = parser.parse_args()
    manifest = use_manifest(args.manifest)
    os.environ["ORDERTALLY_RATE_LIMIT_PER_KEY"] = "1000000/second"
    os.environ["ORDERTALLY_RATE_LIMIT_PER_IP"] = "1000000/second"
    os.environ.setdefault("ORDERTALLY_DATA_DIR", tempfile.mkdtemp(prefix="search-api-data-"))
    result = asyncio.run(_run(args, manifest))
    if "dump" in result:
        Path(args.dump).write_text(json.dumps(result["dump"], ensure_ascii=False))
        result = {"dumped": len(result["dump"]), "file": args.dump}
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
