"""Runs left RUNNING by a process that died hard (kill -9, power loss): found and closed."""

from __future__ import annotations

import os
import socket

from gradlab.tracking import query
from gradlab.tracking.store import Store


def process_start(pid: int) -> str:
    """The kernel's start time of a process (clock ticks since boot): tells a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "unknown"


def alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    now = process_start(pid)
    return start in (None, "", "unknown") or now == "unknown" or now == start


def reap(store: Store, dry_run: bool = False) -> list[str]:
    """Mark KILLED the RUNNING runs whose recorded process on this host is gone; report each."""
    host, lines = socket.gethostname(), []
    for r in query.running(store):
        label = f"{r.id} ({r.name})"
        if r.tag("host") != host:
            lines.append(f"left alone {label}: recorded on host {r.tag('host', 'unknown')!r}, not this one")
            continue
        pid = int(r.tag("pid") or 0)
        if pid and alive(pid, r.tag("pid_start")):
            lines.append(f"left alone {label}: process {pid} is alive")
            continue
        reason = f"reaped: process {pid} on {host} is gone"
        if not dry_run:
            store.set_tags(r.id, {"gradlab.outcome": "killed", "gradlab.reason": reason})
            store.end(r.id, "KILLED")
        lines.append(f"{'would mark' if dry_run else 'marked'} {label} KILLED: {reason}")
    return lines or ["no RUNNING runs"]
