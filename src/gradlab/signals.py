"""What Ctrl-C and SIGTERM do, in one place.

Both raise `Killed` in the main thread, which unwinds like KeyboardInterrupt, so whatever is open
gets its end recorded (a run, a sweep's parent). While an end is being written they are held
(`deferred`) and delivered afterwards. While training they are held to the end of the epoch
(`polled`): an epoch's updates and its history row are recorded together or not at all; a second
signal before then stops at once. The process then exits by the signal (`die`), as a killed
process does: exit status 128 + signum in a shell.
"""

from __future__ import annotations

import os
import signal
from contextlib import contextmanager

STOPS = (signal.SIGINT, signal.SIGTERM)


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
    """Set `handler` for both signals; the previous handlers, or None off the main thread."""
    try:
        return {sig: signal.signal(sig, handler) for sig in STOPS}
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
