"""CPU accounting from /proc (Linux): who used the two cores during a measured window."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

_PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(comm, parent pid, utime + stime, stime) in ticks of a process, or None if it is gone."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    comm = raw[raw.find("(") + 1 : raw.rfind(")")]
    rest = raw[raw.rfind(")") + 2 :].split()
    return comm, int(rest[1]), int(rest[11]) + int(rest[12]), int(rest[12])


def _ended_children(pid: int) -> int:
    """Ticks (user + system) of a process's children that have ended and been waited for."""
    try:
        raw = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0
    rest = raw[raw.rfind(")") + 2 :].split()
    return int(rest[13]) + int(rest[14])


def _all() -> dict[int, tuple[str, int, int, int]]:
    found: dict[int, tuple[str, int, int, int]] = {}
    if not _PROC.is_dir():
        return found
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                found[int(entry.name)] = stat
    return found


def descendants(pid: int) -> list[int]:
    """A process and every process below it."""
    table = _all()
    children: dict[int, list[int]] = {}
    for child, (_, parent, _, _) in table.items():
        children.setdefault(parent, []).append(child)
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        if current in table:
            tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def workers(pid: int) -> list[int]:
    """The processes serving requests below a uvicorn supervisor (not its resource tracker)."""
    found = []
    for child in descendants(pid):
        try:
            title = (_PROC / str(child) / "cmdline").read_bytes()
        except OSError:
            continue
        if child != pid and b"resource_tracker" not in title:
            found.append(child)
    return found or [pid]


def _machine() -> tuple[int, int]:
    """(busy, total) ticks of all CPUs since boot."""
    try:
        fields = [int(v) for v in (_PROC / "stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return total - idle, total


def _postgres_ours(pid: int, database: str) -> bool:
    """A PostgreSQL server process working for `database`, or a shared background process."""
    try:
        title = (_PROC / str(pid) / "cmdline").read_bytes().replace(b"\0", b" ").decode().split()
    except OSError:
        return False
    # Client backends are titled "postgres: <cluster>: <user> <database> <host(port)> ...".
    backend = any("(" in word and word.endswith(")") for word in title) or "[local]" in title
    return not backend or database in title


@dataclass(slots=True)
class Snapshot:
    at: float
    groups: dict[str, int] = field(default_factory=dict)
    self_seconds: float = 0.0
    machine_busy: int = 0
    machine_total: int = 0


def snapshot(server_pid: int | None, pg_database: str | None) -> Snapshot:
    """CPU ticks used so far by the server's process tree, PostgreSQL working for the bench's
    database, this process, and all CPUs."""
    table = _all()
    snap = Snapshot(at=time.monotonic())
    if server_pid is not None:
        tree = set(descendants(server_pid))
        snap.groups["server"] = sum(table[p][2] for p in tree if p in table)
        snap.groups["server_kernel"] = sum(table[p][3] for p in tree if p in table)
        for p in tree:
            if p in table and p != server_pid:
                snap.groups[f"server_pid_{p}"] = table[p][2]
    if pg_database:
        snap.groups["postgres"] = sum(
            t
            for p, (comm, _, t, _) in table.items()
            if comm == "postgres" and _postgres_ours(p, pg_database)
        )
        # Processes PostgreSQL started and ended within the window (parallel workers, forked
        # per statement; backends that closed) are in no snapshot: their CPU is charged to
        # the postmaster when it reaps them (any database's, and whatever the bench measures
        # is the bulk of it while it runs).
        snap.groups["postgres_ended"] = sum(
            _ended_children(p)
            for p, (comm, parent, _, _) in table.items()
            if comm == "postgres" and table.get(parent, ("",))[0] != "postgres"
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    snap.self_seconds = usage.ru_utime + usage.ru_stime
    snap.machine_busy, snap.machine_total = _machine()
    return snap


def usage(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU use between two snapshots in percent of one core (200 = both cores busy); `others`
    is whatever else ran on the machine meanwhile (it competes with the server)."""
    wall = max(after.at - before.at, 1e-9)
    result = {
        name: round(100 * (after.groups[name] - ticks) / _TICK / wall, 1)
        for name, ticks in before.groups.items()
        if name in after.groups
    }
    result["loadgen"] = round(100 * (after.self_seconds - before.self_seconds) / wall, 1)
    per_process = [result.pop(k) for k in list(result) if k.startswith("server_pid_")]
    if len(per_process) > 1:
        # With several API processes: the busiest one (100 = one core), to see the balance.
        result["server_busiest_process"] = max(per_process)
    ours = sum(v for k, v in result.items() if k not in ("server_kernel", "server_busiest_process"))
    total = after.machine_total - before.machine_total
    if total > 0:
        cores = os.cpu_count() or 1
        machine = 100 * cores * (after.machine_busy - before.machine_busy) / total
        result["machine"] = round(machine, 1)
        result["others"] = round(max(machine - ours, 0.0), 1)
    return result


def background_load(seconds: float = 1.0) -> float:
    """CPU busy on the whole machine over a short sample, in percent of one core."""
    busy0, total0 = _machine()
    time.sleep(seconds)
    busy1, total1 = _machine()
    if total1 <= total0:
        return 0.0
    return round(100 * (os.cpu_count() or 1) * (busy1 - busy0) / (total1 - total0), 1)


def tree_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) used so far by a process and everything below it, or None
    if it is gone."""
    table = _all()
    if pid not in table:
        return None
    return sum(table[p][2] for p in descendants(pid) if p in table) / _TICK


def postgres_seconds(database: str) -> float:
    """CPU seconds used so far by PostgreSQL's processes working for `database` (and the shared
    background processes)."""
    return (
        sum(
            t
            for p, (comm, _, t, _) in _all().items()
            if comm == "postgres" and _postgres_ours(p, database)
        )
        / _TICK
    )
