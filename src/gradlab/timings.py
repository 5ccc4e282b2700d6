"""Where a process's time goes, for the benchmark: off unless GRADLAB_TIMINGS names a file.

`stamp(name)` notes the wall-clock time of a phase, `measure(name)` adds up the seconds a block
takes, and `write(role)` leaves this process's figures in a JSON file beside GRADLAB_TIMINGS
(`<file>` for the trainer, `<file>.<role>` for another process, such as the recorder)."""

from __future__ import annotations

import json
import os
import resource
import time
from contextlib import contextmanager

ENV = "GRADLAB_TIMINGS"
_stamps: dict[str, float] = {}
_seconds: dict[str, float] = {}


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def stamp(name: str) -> None:
    if enabled():
        _stamps[name] = time.time()


@contextmanager
def measure(name: str):
    if not enabled():
        yield
        return
    began = time.perf_counter()
    try:
        yield
    finally:
        _seconds[name] = _seconds.get(name, 0.0) + time.perf_counter() - began


def write(role: str = "") -> None:
    path = os.environ.get(ENV)
    if path:
        with open(path + (f".{role}" if role else ""), "w") as f:
            json.dump({"stamps": _stamps, "seconds": _seconds,
                       "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}, f)


def read(path: str, role: str = "") -> dict:
    """What a process wrote (empty if nothing)."""
    try:
        with open(path + (f".{role}" if role else "")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
