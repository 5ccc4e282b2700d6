"""The recorder process: executes the trainer's requests in order until its pipe closes.

It ignores SIGINT, SIGTERM and SIGHUP (the trainer decides, and sends the ends of its runs); if
the trainer goes away without ending a run, the recorder marks it KILLED (tracking.ends)."""

from __future__ import annotations

import gc
import os
import queue
import signal
import threading
from multiprocessing.connection import Connection

from gradlab import timings
from gradlab.tracking import ends
from gradlab.tracking.artifacts import files
from gradlab.tracking.recorder.messages import (ANSWERED, Answer, Ask, Draw, Failed, Finish, Log, Open, Pid, Reopen,
                                                Start, Started, Sync, Tag, keys_of)
from gradlab.tracking.store import TrackingError, is_store_error, write_error


class _State:
    """What the recorder holds: the store, run ids by key, the runs not yet ended."""

    def __init__(self, outbox: Connection):
        self.outbox = outbox
        self.store = None
        self.ids: dict[int, str] = {}
        self.open_runs: set[int] = set()


def _open(state: _State, m: Open):
    from gradlab.tracking.store import Store

    if state.store is None or state.store.uri != m.uri:
        state.store = Store(m.uri)


def _start(state: _State, m: Start):
    started = {}
    for key, spec in zip(m.keys, m.specs):
        started[key] = state.ids[key] = state.store.start(spec)
        state.open_runs.add(key)
    state.outbox.send(Started(started))


def _reopen(state: _State, m: Reopen):
    state.store.reopen(m.run_id)
    state.ids[m.key] = m.run_id
    state.open_runs.add(m.key)


def _tag(state: _State, m: Tag):
    state.store.set_tags(state.ids[m.key], m.tags)


def _log(state: _State, m: Log):
    for key, points in m.points.items():
        state.store.log_points(state.ids[key], points)


def _finish(state: _State, m: Finish):
    for key, end in zip(m.keys, m.ends):
        if key not in state.open_runs:  # ended already (sent again after a sibling recorder died)
            continue
        state.open_runs.discard(key)
        state.store.finish(state.ids[key], end, files(end))
    # The figures' reference cycles, now, before the next run's pile onto them. What survives is
    # the store's and matplotlib's long-lived state (made at the first run): frozen, so that each
    # collection scans one run's objects, not every object of mlflow (~50 ms a run otherwise).
    with timings.measure("gc"):
        gc.collect()
        gc.freeze()


def _ask(state: _State, m: Ask):
    from gradlab.tracking import query

    return getattr(query, m.query)(state.store, *m.args)


def _draw(state: _State, m: Draw) -> tuple[int, list[tuple[str, str]]]:
    from gradlab import redraw

    drawn, failed = 0, []
    for run_id in m.run_ids:
        try:
            redraw.draw(state.store, run_id, trust_code=True, trust_data=True)
            drawn += 1
        except Exception as e:  # noqa: BLE001 - a figure is never worth a sweep: said, and noted on its run
            failed.append((run_id, f"{type(e).__name__}: {e}"))
            state.store.set_tags(run_id, {"gradlab.plot_error": failed[-1][1]})
        gc.collect()  # the figures' reference cycles, as after a run's end
    return drawn, failed


HANDLERS = {Open: _open, Start: _start, Reopen: _reopen, Log: _log, Tag: _tag, Finish: _finish, Sync: lambda state, m: None,
            Ask: _ask, Draw: _draw}


# Requests read off the pipe and not yet done, at most: past it the pipe fills and the trainer waits.
READ_AHEAD = 64


def _reading(inbox: Connection) -> queue.Queue:
    """The requests as a thread reads them off the pipe, ahead of their execution, then None
    (the pipe closed): what the trainer sent is here, out of its memory, even if it crashes
    (a segfault in its next batch) before this process gets to it."""
    read: queue.Queue = queue.Queue(maxsize=READ_AHEAD)

    def reader():
        while True:
            try:
                message = inbox.recv()
            except (EOFError, OSError):
                message = None
            read.put(message)
            if message is None:
                return

    threading.Thread(target=reader, name="gradlab-recorder-read", daemon=True).start()
    return read


def serve(read_fd: int, write_fd: int, siblings: list = ()) -> None:
    """The recorder process: execute requests in order until the pipe closes. Once the slow
    imports are done, fork a sibling for each further pair of pipes (no store is open yet)."""
    if os.fork():  # out of the trainer's process tree (see recorder.client): this one goes, its child records
        os._exit(0)
    outbox = Connection(write_fd, readable=False)
    outbox.send(Pid(os.getpid()))  # the trainer knows it by its pid: not its child any more
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group; the trainer decides
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a closed terminal: the trainer ends its runs, this records them
    with timings.measure("import mlflow"):
        import mlflow.tracking  # noqa: F401 - the slow import, done while the trainer imports torch
    with timings.measure("import matplotlib"):
        import gradlab.plots  # noqa: F401 - matplotlib loads now, while the trainer is busy
    # What the imports made lives as long as this process: out of the collector's sight, a full
    # collection after each run's figures (cycles of artists) costs little and memory stays flat.
    gc.freeze()
    role = "recorder"
    for i, (r, w) in enumerate(siblings):
        if os.fork() == 0:
            # the pipes of the siblings forked before this one are closed here already
            for fd in (read_fd, *(fd for pair in siblings[i + 1:] for fd in pair)):
                os.close(fd)
            outbox.close()  # the first one's pipe up
            read_fd, role = r, f"recorder{i + 1}"
            outbox = Connection(w, readable=False)
            outbox.send(Pid(os.getpid()))  # its own pid: the trainer watches it (a stopped recorder is killed)
            break
        os.close(r)
        os.close(w)
    inbox = _reading(Connection(read_fd, writable=False))
    state = _State(outbox)
    while True:
        message = inbox.get()
        if message is None:
            break
        try:
            with timings.measure(type(message).__name__):
                answer = HANDLERS[type(message)](state, message)
            if isinstance(message, ANSWERED):
                outbox.send(Answer(answer))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the trainer, with whose runs it was
            if state.store is not None and is_store_error(e):
                e = write_error(e, state.store.uri)
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            try:
                outbox.send(Failed(text if isinstance(e, TrackingError) else f"{type(message).__name__}: {text}",
                                   keys_of(message)))
                if isinstance(message, ANSWERED):  # its sender waits: the failure is its answer
                    outbox.send(Answer(None))
            except OSError:
                pass
    for key in state.open_runs:  # the trainer went away without ending these
        ends.kill(state.store, state.ids[key], "the training process ended before recording its end")
    timings.write(role)
    # Every write is committed; tearing down mlflow, SQLAlchemy and matplotlib only costs time.
    outbox.close()
    os._exit(0)
