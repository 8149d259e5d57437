"""Where the server's time goes: py-spy samples the server process(es) during a closed-loop run,
with native frames, and the collapsed stacks are summarised: samples sitting in a system call
(a socket write that wakes PostgreSQL, epoll, a futex) apart, then self time by library and by
function (innermost Python frame) and inclusive time of ordertally's functions. Output files
stay under bench/results/ (git-ignored)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

RATE_HZ = 100
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*)\)$")
_SYSCALL = re.compile(
    r"^_*(libc_)?(write|writev|send|sendto|sendmsg|read|recv|recvfrom|epoll_wait|epoll_pwait"
    r"|futex|fsync|fdatasync|pwrite64|pread64|poll|select|nanosleep|clock_nanosleep)"
    r"(64)?(_nocancel)?$"
)
# Native frames of a thread that is blocked, not computing: idle worker threads wait on their
# queue's lock; a thread in take_gil waits for another thread to release the GIL.
_WAIT = re.compile(
    r"^(take_gil|PyThread_acquire_lock_timed|pthread_cond_(timed)?wait.*|sem_(timed|clock)?wait.*"
    r"|__futex_abstimed_wait.*|futex_wait.*|PyCOND_T?WAIT.*)$"
)

# Libraries worth naming on their own; anything else under site-packages is "other library".
_PACKAGES = (
    "sqlalchemy",
    "asyncpg",
    "aiosqlite",
    "sqlite3",
    "fastapi",
    "starlette",
    "pydantic",
    "pydantic_core",
    "uvicorn",
    "httptools",
    "uvloop",
    "anyio",
    "greenlet",
    "orjson",
    "cryptography",
    "phonenumbers",
    "prometheus_client",
    "asyncio",
    "concurrent",
    "threading",
    "json",
    "hashlib",
    "hmac",
    "base64",
    "secrets",
    "decimal",
    "typing",
    "dataclasses",
)


def py_spy() -> str | None:
    """The py-spy executable next to this Python, or on PATH."""
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def command(
    pid: int, seconds: float, raw_path: Path, subprocesses: bool, native: bool
) -> list[str]:
    """The py-spy command line sampling `pid` for `seconds` into a collapsed-stack file."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    args = [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    args += ["--rate", str(RATE_HZ), "--format", "raw", "--nolineno", "--threads"]
    args += ["--full-filenames", "--output", str(raw_path)]
    args += ["--native"] if native else ["--nonblocking"]
    if subprocesses:
        args.append("--subprocesses")
    return args


def start(pid: int, seconds: float, raw_path: Path, subprocesses: bool) -> subprocess.Popen[bytes]:
    """Start sampling with native frames (pausing the process at each sample)."""
    return subprocess.Popen(
        command(pid, seconds, raw_path, subprocesses, native=True),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _is_python(file: str) -> bool:
    return file.endswith(".py") or file.startswith("<frozen")


def _package(file: str) -> str:
    parts = Path(file).parts
    if "ordertally" in parts:
        rest = parts[len(parts) - parts[::-1].index("ordertally") :]
        return "ordertally." + rest[0].removesuffix(".py") if rest else "ordertally"
    if "site-packages" in parts:
        rest = parts[parts.index("site-packages") + 1 :]
        name = rest[0].split(".")[0] if rest else "?"
        return name if name in _PACKAGES else "other library"
    for part in reversed(parts[:-1]):
        if part in _PACKAGES:
            return part
    stem = Path(file).stem
    return stem if stem in _PACKAGES else "python stdlib/other"


def _short(file: str) -> str:
    parts = Path(file).parts
    for anchor in ("site-packages", "src"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    return "/".join(parts[-2:])


def _thread_name(header: str) -> str:
    name = header.split("): ", 1)[1] if "): " in header else header
    if name == "MainThread":
        return "MainThread (the event loop)"
    if "_connection_worker_thread" in name:
        return "aiosqlite connection threads"
    return name


def analyse(raw_path: Path, top: int = 25) -> dict[str, Any]:
    """Percentages of samples: by thread, in system calls, self time by library and function
    (innermost Python frame; native code is charged to the Python frame that called it) and
    inclusive time of ordertally's functions."""
    by_thread: Counter[str] = Counter()
    syscalls: Counter[str] = Counter()
    waits: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = computing = 0
    for line in raw_path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        # py-spy puts "process (pid): ..." and "thread (tid): name" headers before the frames.
        headers = [f for f in frames if f.startswith(("thread (", "process ("))]
        parsed = [m for f in frames if f not in headers and (m := _FRAME.match(f))]
        python = [(m["func"], m["file"]) for m in parsed if _is_python(m["file"])]
        if not python:
            continue
        total += count
        threads = [h for h in headers if h.startswith("thread (")]
        by_thread[_thread_name(threads[-1]) if threads else "all threads"] += count
        leaf = parsed[-1]
        native_tail = []
        for m in reversed(parsed):
            if _is_python(m["file"]):
                break
            native_tail.append(m["func"])
        waiting = next((f for f in native_tail if _WAIT.match(f)), None)
        if waiting is not None:
            kind = "waiting for the GIL" if waiting == "take_gil" else "waiting on a lock/queue"
            waits[f"{kind} in {python[-1][0]}"] += count
            continue
        if not _is_python(leaf["file"]) and _SYSCALL.match(leaf["func"]):
            name = leaf["func"].strip("_").removeprefix("libc_")
            syscalls[f"{name}() called from {python[-1][0]}"] += count
            continue
        computing += count
        func, file = python[-1]
        if file.endswith("asyncio/runners.py") and func == "Runner.run":
            # No Python frame above the loop: uvloop's own C code (sockets, HTTP parsing).
            label = package = "uvloop C code (sockets, HTTP parsing, callbacks)"
        else:
            label, package = f"{_short(file)}:{func}", _package(file)
        by_package[package] += count
        self_time[label] += count
        for label in {f"{_short(file)}:{func}" for func, file in python}:
            inclusive[label] += count

    def share(
        counter: Counter[str], limit: int, of: int, only: str | None = None
    ) -> list[list[Any]]:
        items = [(k, v) for k, v in counter.most_common() if only is None or k.startswith(only)]
        return [[k, round(100 * v / of, 1)] for k, v in items[:limit]] if of else []

    return {
        "samples": total,
        "computing_samples": computing,
        "by_thread_pct": share(by_thread, 10, total),
        "waiting_pct_of_all": share(waits, 10, total),
        "system_calls_pct_of_all": share(syscalls, 10, total),
        "self_by_package_pct": share(by_package, 30, computing),
        "self_by_function_pct": share(self_time, top, computing),
        "inclusive_ordertally_pct": share(inclusive, top, computing, "ordertally/"),
    }


def render(summary: dict[str, Any]) -> str:
    """The summary as text."""
    total, computing = summary["samples"], summary["computing_samples"]
    out = [
        f"samples: {total} ({RATE_HZ} Hz); {computing} computing, the rest blocked "
        "(waiting on a lock, a queue or the GIL, or inside a system call)",
        "",
    ]
    sections = (
        ("samples by thread (% of all)", "by_thread_pct"),
        ("blocked on a lock, a queue or the GIL (% of all)", "waiting_pct_of_all"),
        (
            "inside a system call (% of all; the kernel's work, or on a busy machine a wait "
            "for a core after waking PostgreSQL)",
            "system_calls_pct_of_all",
        ),
        ("self time by library (% of computing samples)", "self_by_package_pct"),
        ("self time by function (% of computing samples)", "self_by_function_pct"),
        (
            "inclusive time of ordertally functions (% of computing samples; greenlet switches "
            "cut some stacks short, so these are lower bounds)",
            "inclusive_ordertally_pct",
        ),
    )
    for title, key in sections:
        out.append(f"== {title}")
        out.extend(f"{pct:6.1f}%  {name}" for name, pct in summary[key])
        out.append("")
    return "\n".join(out)
