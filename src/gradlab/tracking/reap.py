"""Runs left RUNNING by a process that died hard (kill -9, power loss): found and closed."""

from __future__ import annotations

import socket

from gradlab.tracking import ends, query
from gradlab.tracking.processes import alive
from gradlab.tracking.store import Store


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
        if not dry_run and (failed := ends.kill(store, r.id, reason)):
            lines.append(f"could not mark {label} KILLED: {failed}")
            continue
        lines.append(f"{'would mark' if dry_run else 'marked'} {label} KILLED: {reason}")
    return lines or ["no RUNNING runs"]
