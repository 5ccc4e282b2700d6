"""Processes known by pid and start time, so that a pid the kernel gave to another process since
is neither trusted nor killed (Linux /proc; elsewhere the pid is all there is to go by)."""

from __future__ import annotations

import os
from pathlib import Path


def _stat(pid: int) -> list[str] | None:
    """/proc/PID/stat's fields after the command name (state first), or None where there is none."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start(pid: int) -> str:
    """The kernel's start time of a process (clock ticks since boot), or "unknown"."""
    fields = _stat(pid)
    return fields[19] if fields else "unknown"  # field 22 of stat


def alive(pid: int, start: str | None) -> bool:
    """That process (the same start time, where both are known) exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _stat(pid)
    if fields is None:
        return True
    return fields[0] != "Z" and (start in (None, "", "unknown") or fields[19] == start)


def alive_here(host: str | None, pid, start: str | None) -> bool | None:
    """That process, recorded as (host, pid, start time), lives: None where it ran on another host
    (it cannot be seen from here) or no pid was recorded."""
    import socket

    if host != socket.gethostname() or not str(pid).isdigit():
        return None
    return alive(int(pid), start)


def stopped(pid: int, start: str | None) -> bool:
    """That process is stopped by a signal (SIGSTOP, SIGTSTP: state T): it runs no code, and
    holds whatever it held (a SQLite write lock, a pipe nobody drains), until it is continued."""
    fields = _stat(pid)
    return fields is not None and fields[0] == "T" and (start in (None, "", "unknown") or fields[19] == start)
