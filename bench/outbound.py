"""Outbound HTTP calls: a new `httpx.AsyncClient` per call against the process's shared client
(`ordertally.core.outbound`), as the payment providers, the SMS gateway and the channel
simulator make them. `python -m bench.outbound` (`--help` for the knobs).

The server is a minimal keep-alive HTTP/1.1 responder on 127.0.0.1 in the same process, so the
figures are the client's cost: CPU time (this process, user + system) and wall time per call,
sequential calls, medians over `--rounds`. Building a client loads the CA bundle into a new SSL
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


async def _shared(url: str) -> None:
    (await outbound.client("bench", timeout=5.0).post(url, content=b"{}")).raise_for_status()


async def _round(
    call: Callable[[str], Awaitable[None]], url: str, calls: int
) -> tuple[float, float]:
    """(CPU ms per call, wall ms per call) of `calls` sequential calls."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        await call(url)
    return (
        (time.process_time() - cpu) * 1000 / calls,
        (time.perf_counter() - wall) * 1000 / calls,
    )


async def run(args: argparse.Namespace) -> None:
    server = await asyncio.start_server(serve_ok, HOST, 0)
    port = server.sockets[0].getsockname()[1]
    url = f"http://{HOST}:{port}/v3/pay/transactions/native"
    results: dict[str, list[tuple[float, float]]] = {"per_call": [], "shared": []}
    try:
        await _shared(url)  # warm up imports and the first connection
        for _ in range(args.rounds):
            results["per_call"].append(await _round(_per_call, url, args.calls))
            results["shared"].append(await _round(_shared, url, args.calls))
    finally:
        await outbound.close_all()
        await asyncio.sleep(0.1)  # the server sees its connections closed
        server.close()
        await server.wait_closed()
    load = os.getloadavg()
    print(f"python -m bench.outbound --calls {args.calls} --rounds {args.rounds}")
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
    ratio_cpu = medians["per_call"][0] / medians["shared"][0]
    ratio_wall = medians["per_call"][1] / medians["shared"][1]
    print(f"per call / shared: CPU x{ratio_cpu:.1f}, wall x{ratio_wall:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100, help="sequential calls per round")
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
