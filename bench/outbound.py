"""Outbound HTTP calls: a new `httpx.AsyncClient` per call, a shared client on httpx's own
connection pool (httpcore, what `ordertally.core.outbound` gave before issue 21's h45), and the
process's shared client (`ordertally.core.outbound`: httpx over aiohttp's pool), as the payment
providers, the SMS gateway, the carrier and the webhooks make them. `python -m bench.outbound`
(`--help` for the knobs).

The server is a minimal keep-alive HTTP/1.1 responder on 127.0.0.1 in the same process, so the
figures are the client's cost: CPU time (this process, user + system) and wall time per call,
medians over `--rounds`; `--concurrency N` keeps N calls in flight (a sender round or the
carrier loop sends 8 at once per target). Building a client loads the CA bundle into a new SSL
context even for a plain-HTTP target, which is what the shared client saves.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable

import httpx

from ordertally.core import outbound

HOST = "127.0.0.1"
ANSWER = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)


async def serve_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A keep-alive HTTP/1.1 sink on 127.0.0.1: reads each request, answers 200 `{"ok":true}`."""
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            if length:
                await reader.readexactly(length)
            writer.write(ANSWER)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        pass
    finally:
        writer.close()


async def _per_call(url: str) -> None:
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as client:
        (await client.post(url, content=b"{}")).raise_for_status()


_HTTPCORE: list[httpx.AsyncClient] = []


async def _httpcore(url: str) -> None:
    if not _HTTPCORE:
        _HTTPCORE.append(httpx.AsyncClient(timeout=5.0, limits=outbound.LIMITS, trust_env=False))
    (await _HTTPCORE[0].post(url, content=b"{}")).raise_for_status()


async def _shared(url: str) -> None:
    (await outbound.client("bench", timeout=5.0).post(url, content=b"{}")).raise_for_status()


async def _round(
    call: Callable[[str], Awaitable[None]], url: str, calls: int, concurrency: int = 1
) -> tuple[float, float]:
    """(CPU ms per call, wall ms per call) of `calls` calls, `concurrency` in flight."""

    async def lane(count: int) -> None:
        for _ in range(count):
            await call(url)

    shares = [
        calls // concurrency + (1 if i < calls % concurrency else 0) for i in range(concurrency)
    ]
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane(n) for n in shares))
    return (
        (time.process_time() - cpu) * 1000 / calls,
        (time.perf_counter() - wall) * 1000 / calls,
    )


async def run(args: argparse.Namespace) -> None:
    server = await asyncio.start_server(serve_ok, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://{HOST}:{port}/v3/pay/transactions/native"
    modes: dict[str, Callable[[str], Awaitable[None]]] = {
        "per_call": _per_call,
        "httpcore": _httpcore,
        "shared": _shared,
    }
    if args.no_per_call:
        del modes["per_call"]
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in modes}
    try:
        for call in modes.values():  # warm up imports and the first connections
            await _round(call, url, args.concurrency, args.concurrency)
        for _ in range(args.rounds):
            for mode, call in modes.items():
                results[mode].append(await _round(call, url, args.calls, args.concurrency))
    finally:
        await outbound.close_all()
        for each in _HTTPCORE:
            await each.aclose()
        await asyncio.sleep(0.1)  # the server sees its connections closed
        server.close()
        await server.wait_closed()
    load = os.getloadavg()
    print(
        f"python -m bench.outbound --calls {args.calls} --rounds {args.rounds}"
        f" --concurrency {args.concurrency}{' --no-per-call' if args.no_per_call else ''}"
    )
    print(f"load average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    medians = {}
    for mode, rounds in results.items():
        cpu = statistics.median(r[0] for r in rounds)
        wall = statistics.median(r[1] for r in rounds)
        medians[mode] = (cpu, wall)
        spread = ", ".join(f"{r[0]:.2f}" for r in rounds)
        print(
            f"{mode:>9}: CPU {cpu:.2f} ms/call, wall {wall:.2f} ms/call (CPU per round: {spread})"
        )
    for mode in ("per_call", "httpcore"):
        if mode in medians:
            ratio_cpu = medians[mode][0] / medians["shared"][0]
            ratio_wall = medians[mode][1] / medians["shared"][1]
            print(f"{mode} / shared: CPU x{ratio_cpu:.2f}, wall x{ratio_wall:.2f}")


async def serve_forever(port: int) -> None:
    """The sink alone on `port` (a JSON webhook receiver for bench.consumers --outbound)."""
    server = await asyncio.start_server(serve_ok, HOST, port)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="sequential calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=1, help="calls in flight at once")
    parser.add_argument(
        "--no-per-call", action="store_true", help="leave out the new-client-per-call mode"
    )
    parser.add_argument("--serve", type=int, metavar="PORT", help="only run the sink on PORT")
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve_forever(args.serve))
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
