"""What Ctrl-C, SIGTERM and SIGHUP (the terminal closed) do, in one place.

Each raises `Killed` in the main thread, which unwinds like KeyboardInterrupt, so whatever is open
gets its end recorded (a run, a sweep's parent). While an end is being written they are held
(`deferred`) and delivered afterwards. While training they are held to the end of the epoch
(`polled`): an epoch's updates and its history row are recorded together or not at all; a second
signal before then stops at once. The process then exits by the signal (`die`), as a killed
process does: exit status 128 + signum in a shell.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable

STOPS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # Ctrl-C, kill, the terminal closed
WATCH_SECONDS = 0.5  # how often a sweep's worker process looks for its launcher


class Killed(BaseException):
    """SIGINT or SIGTERM arrived (BaseException: `except Exception` does not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def signum_of(stop: BaseException) -> int:
    """The signal behind a Killed, or SIGINT for a KeyboardInterrupt raised without our handler."""
    return stop.signum if isinstance(stop, Killed) else signal.SIGINT


def _raise(signum, frame):
    raise Killed(signum)


def _install(handler) -> dict | None:
    """Set `handler` for the stop signals; the previous handlers, or None off the main thread.
    An ignored SIGHUP stays ignored: `nohup` ignores it, so that the run outlives its terminal.
    (SIGINT is taken over even where ignored: a shell ignores it in the jobs a script starts with &.)"""
    def ours(sig) -> bool:
        return sig != signal.SIGHUP or signal.getsignal(sig) is not signal.SIG_IGN

    try:
        return {sig: signal.signal(sig, handler) for sig in STOPS if ours(sig)}
    except ValueError:  # not the main thread: signals are not ours to handle
        return None


def _restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@contextmanager
def as_exceptions():
    """SIGINT and SIGTERM raise Killed while the block runs."""
    previous = _install(_raise)
    try:
        yield
    finally:
        if previous is not None:
            _restore(previous)


@contextmanager
def deferred():
    """Hold SIGINT and SIGTERM while the block runs (an end being written); raise Killed after it
    for the first that arrived."""
    pending = []
    previous = _install(lambda signum, frame: pending.append(signum))
    try:
        yield
    finally:
        if previous is not None:
            _restore(previous)
        if pending:
            raise Killed(pending[0])


@contextmanager
def polled():
    """Hold SIGINT and SIGTERM until the block calls the `check` it is given (between epochs), or
    ends, then raise Killed for the first that arrived; a second one raises at once."""
    pending = []

    def hold(signum, frame):
        if pending:
            raise Killed(pending[0])
        pending.append(signum)

    def check() -> None:
        if pending:
            raise Killed(pending[0])

    previous = _install(hold)
    try:
        yield check
    finally:
        if previous is not None:
            _restore(previous)
    check()  # one that came after the last epoch's check


def die(signum: int) -> None:
    """End this process by `signum`, with its default action."""
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


_idle = threading.Event()  # set while this worker process runs no job
_watching: set[int] = set()
# Held while a job starts and while the watcher decides its launcher is gone: a job queued to this
# worker starts before that decision (and is stopped) or after it (and is refused), never between.
_turn = threading.Lock()
_orphaned = threading.Event()


@contextmanager
def ended_with(launcher_pid: int | None, before_exit: Callable[[], None]):
    """A sweep's job in a worker process that its launcher started (joblib's): should the launcher
    die (SIGKILL), the job stops as by SIGTERM (its run ends KILLED, its history kept) and the
    worker exits once it has, rather than live on orphaned. Elsewhere (the launcher's own process,
    a Slurm job) nothing changes."""
    worker = bool(launcher_pid) and launcher_pid != os.getpid() and os.getppid() == launcher_pid
    if worker and launcher_pid not in _watching:
        _watching.add(launcher_pid)
        threading.Thread(target=_watch, args=(launcher_pid, before_exit), daemon=True, name="gradlab-launcher").start()
    with _turn:
        if _orphaned.is_set():  # the launcher is gone and this worker is leaving: no run starts here
            raise Killed(signal.SIGTERM)
        _idle.clear()
    try:
        yield
    finally:
        _idle.set()


def _watch(launcher_pid: int, before_exit: Callable[[], None]) -> None:
    while os.getppid() == launcher_pid:  # an orphan is adopted by another process
        time.sleep(WATCH_SECONDS)
    with _turn:
        _orphaned.set()
        busy = not _idle.is_set()
    if busy:
        os.kill(os.getpid(), signal.SIGTERM)  # Killed in the job, at the end of its epoch
        _idle.wait(120)
    before_exit()  # what the job sent its recorder is delivered
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(128 + signal.SIGTERM)
