"""Peak memory of a command's whole process family, sampled (gradlab's recorders leave their
trainer's tree on purpose: the benchmark adopts them to count them)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Reading smaps_rollup of a process that maps torch costs milliseconds: sampled every 20 ms, three
# such processes took most of a core from the sweep being measured.
SAMPLE_EVERY = 0.25


def _tree(pid: int) -> list[int]:
    """A process and its descendants (Linux /proc)."""
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out += [q for child in f.read().split() for q in _tree(int(child))]
    except OSError:
        pass
    return out


def _memory_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                key, value = line.split(":", 1)
                if key in ("Rss", "Pss"):
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def _adopt_orphans() -> None:
    """Make this process the reaper of its orphaned descendants (Linux prctl
    PR_SET_CHILD_SUBREAPER): gradlab's recorder leaves its trainer's process tree on purpose, and
    must still be counted with it."""
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)


def sampled_memory(cmd: list[str], env: dict) -> dict:
    """Peak memory of a command's processes, sampled every SAMPLE_EVERY s (its recorders too, which leave
    its tree and are adopted by this process): the resident sets summed at the same instant
    (shared library pages counted once per process, so this errs high) and the proportional sets
    (shared pages split between the processes that map them)."""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", **env}
    _adopt_orphans()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rss = pss = processes = 0
    while proc.poll() is None:
        tree = _tree(os.getpid())[1:]  # every descendant of the bench: the command and what it left behind
        mem = [_memory_kib(p) for p in tree]
        rss, pss = max(rss, sum(m.get("Rss", 0) for m in mem)), max(pss, sum(m.get("Pss", 0) for m in mem))
        processes = max(processes, len(tree))
        time.sleep(SAMPLE_EVERY)
    _reap_adopted()
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed ({proc.returncode})")
    return {"peak_rss_mib": rss / 1024, "peak_pss_mib": pss / 1024, "processes": processes}


def _reap_adopted() -> None:
    """Collect the adopted recorders once they exit (they would stay zombies of this process)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
