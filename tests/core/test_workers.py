"""`ordertally serve --workers 2`: the kernel spreads connections over the API processes (a
listening socket per process, SO_REUSEPORT; core/workers.py), and a process that dies is
replaced without leaving connections to hang."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest

from ordertally.core.db import Database
from ordertally.core.workers import SPREADS
from tests.conftest import ONLY_SQLITE
from tests.live import free_port, stop_processes

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(not SPREADS, reason="SO_REUSEPORT spreads connections on Linux only"),
]

CONNECTIONS = 40
REQUEST = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _sockets(port: int, state: str) -> set[int]:
    """Socket inodes in TCP `state` ("01" established, "0A" listening) on local port `port`."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == state:
                inodes.add(int(fields[9]))
    return inodes


def _established(port: int) -> set[int]:
    return _sockets(port, "01")


def _listening(port: int) -> set[int]:
    return _sockets(port, "0A")


def _owned(pid: int, inodes: set[int]) -> set[int]:
    """Which of these socket inodes process `pid` holds."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:[") and int(target[8:-1]) in inodes:
            held.add(int(target[8:-1]))
    return held


def _held_by(pid: int, inodes: set[int]) -> int:
    return len(_owned(pid, inodes))


def _open_and_ask(port: int, n: int) -> list[socket.socket]:
    """`n` keep-alive connections opened at once, each answered once."""
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    for s in socks:
        s.sendall(REQUEST)
    for s in socks:
        assert s.recv(4096).startswith(b"HTTP/1.1 200"), "a connection was not answered"
    return socks


def _wait_up(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 90
    while True:
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "ordertally serve --workers did not start"
        if len(_listening(port)) == 2:
            try:
                for s in _open_and_ask(port, 4):
                    s.close()
                return
            except OSError:
                pass
        time.sleep(0.2)


@ONLY_SQLITE  # the sockets do not depend on the database
async def test_connections_opened_at_once_are_spread_and_a_dead_process_is_replaced(
    db: Database,
) -> None:
    await anyio.to_thread.run_sync(_spread_and_replaced)


def _spread_and_replaced() -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "ordertally", "serve", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "2"],
        env=dict(os.environ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_up(process, port)
        # Each process listens on a socket of its own; the parent keeps none
        assert len(_listening(port)) == 2
        assert _held_by(process.pid, _listening(port)) == 0
        # When a client opens 40 keep-alive connections at once
        socks = _open_and_ask(port, CONNECTIONS)
        try:
            # Then both processes hold a fair share of them (a 1-in-10^7 chance of fewer than 5
            # on one side when the kernel hashes 40 connections over two sockets)
            workers = [c for c in _children(process.pid) if _held_by(c, _listening(port))]
            established = _established(port)
            shares = sorted(_held_by(pid, established) for pid in workers)
            assert sum(shares) == CONNECTIONS and shares[0] >= 5, shares
        finally:
            for s in socks:
                s.close()
        # When one process dies, the supervisor replaces it, and every new connection is
        # answered meanwhile and after: no socket is left listening without a process (the
        # connections a dying process had queued but not accepted are reset, as the kernel
        # does for any listening socket closed with a queue)
        killed = _owned(workers[0], _listening(port))
        os.kill(workers[0], signal.SIGKILL)
        # (its own socket closes with it; the supervisor may already have bound the
        # replacement's, so the count of listening sockets says nothing)
        deadline = time.monotonic() + 30
        while _listening(port) & killed:
            assert time.monotonic() < deadline, "the killed process's socket stayed open"
            time.sleep(0.05)
        for s in _open_and_ask(port, CONNECTIONS):
            s.close()
        deadline = time.monotonic() + 90
        while workers[0] in _children(process.pid) or len(_listening(port)) != 2:
            assert time.monotonic() < deadline, "the dead process was not replaced"
            time.sleep(0.2)
        for s in _open_and_ask(port, CONNECTIONS):
            s.close()
    finally:
        stop_processes([process])
