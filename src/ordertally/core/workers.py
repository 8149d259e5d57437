"""`ordertally serve --workers N` on Linux: N API processes, each accepting on its own listening
socket, all bound to the same port with SO_REUSEPORT, so that the kernel spreads new
connections over the processes by a hash of each connection's addresses.

uvicorn's own supervisor gives every process the same listening socket. A burst of new
connections wakes one process first, and asyncio accepts up to the backlog in one go, so a
client that opens its keep-alive connections at once (a load balancer's pool, a proxy, the
benches' 20 searchers) can land every connection on one process: the other cores idle while
that one queues (docs/benchmarks.md: the SQLite search at 1M ran at half its throughput that
way). With a socket per process the kernel decides per connection, before any process wakes.

The supervision is uvicorn's (`Multiprocess`: health checks, a dead process replaced, SIGHUP
restarts, signals); only where a process's socket comes from differs. The parent closes its
copy of each socket once the process has started: a socket left open in the parent would keep
its share of new connections after its process died, with nobody to accept them. Elsewhere than
Linux (where SO_REUSEPORT does not balance) `serve` keeps uvicorn's shared socket.
"""

from __future__ import annotations

import socket
import sys

from uvicorn.config import STARTUP_FAILURE, Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process, logger

SPREADS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A socket listening on host:port that other processes' sockets may share (SO_REUSEPORT)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class SpreadWorkers(Multiprocess):
    """uvicorn's supervisor with one SO_REUSEPORT socket per process."""

    def __init__(self, config: Config) -> None:
        super().__init__(config, sockets=[])
        # Bound here, in the parent, so that a port already taken fails `serve` at once.
        self._first: socket.socket | None = listening_socket(
            config.host, config.port, config.backlog
        )

    def _spawn(self) -> Process:
        sock, self._first = self._first, None
        if sock is None:
            sock = listening_socket(self.config.host, self.config.port, self.config.backlog)
        try:
            process = Process(self.config, [sock])
            process.start()
        finally:
            sock.close()  # the process holds its own descriptor now
        return process

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            self.processes.append(self._spawn())

    def restart_all(self) -> None:
        """SIGHUP: replace each process, the new one serving before the old one retires."""
        for idx, old in enumerate(self.processes):
            if self.should_exit.is_set():
                return
            new = self._spawn()
            if not new.wait_until_ready(self.config.timeout_worker_healthcheck, self.should_exit):
                new.kill()
                new.join()
                return
            old.terminate()
            old.join()
            self.processes[idx] = new

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return
        for idx, process in enumerate(self.processes):
            if process.is_alive(timeout=self.config.timeout_worker_healthcheck):
                continue
            process.kill()
            process.join()
            if process.exitcode == STARTUP_FAILURE:
                logger.error(f"Child process [{process.pid}] failed to start, stopping.")
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            logger.info(f"Child process [{process.pid}] died")
            self.processes[idx] = self._spawn()
