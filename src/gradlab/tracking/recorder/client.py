"""The trainer's side of one recorder process: it starts the process, sends requests down one
pipe in order and reads the replies from another.

The recorder starts before torch is imported, so importing mlflow and opening the store overlap
the import of torch, and logging and drawing figures overlap training. A request that returns
nothing is not waited for; if it fails, the Failed reply comes back naming its runs: a failure of
the store itself, or of a run still training, is raised at the next request (that run stops); a
failure of a run already ended (a sweep's earlier batch, written while the next one trains) is
kept and said by `sync` or `failures` (the sweep's end), never blamed on the runs of a later batch."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from multiprocessing.connection import Connection

from gradlab.tracking import ends
from gradlab.tracking.processes import alive, process_start, stopped
from gradlab.tracking.recorder.messages import (ANSWERED, QUERIES, START_TOKEN, Answer, Ask, Draw, Failed, Finish, Log, Open,
                                                Pid, RecorderGone, Reopen, Start, Started, Sync, Tag)
from gradlab.tracking.spec import RunEnd, RunSpec
from gradlab.tracking.store import TrackingError, creation_lock, preflight, sqlite_path, tracking_uri
from gradlab.tracking.stream import Points

OUTBOX = 32  # requests waiting to be written, at most
# A recorder found stopped (SIGSTOP) this many looks in a row, WATCH_EVERY seconds apart, is killed
# as if it had died: stopped, it holds the store's write lock (every other writer fails after
# SQLite's 20 s busy timeout) and a pipe nobody drains (the trainer's writes wait forever).
# Counted in looks, not seconds: a Ctrl-Z stops the trainer too, and it looks again only once
# both are continued.
WATCH_EVERY = 0.5
STUCK_LOOKS = 10
REQUESTS = (Open, Start, Log, Tag, Finish, Reopen, Sync, Ask, Draw)


def spawn(siblings: int) -> list[tuple[int, int]]:
    """Start a recorder process, and `siblings` more forked from it once it has imported mlflow
    and matplotlib (a sweep's pool: each import is paid once); (down write, up read) pipe ends
    of each.

    A plain interpreter on inherited pipes: nothing of this process crosses over (no SQLite
    handle, no start method of a launcher's worker pool, no __main__ re-import). It leaves this
    process's tree at once (serve forks, the child it started exits): a launcher that kills its
    worker's tree (joblib's loky: SIGKILL to every descendant) must not take the recorder along,
    which then ends the runs its trainer left."""
    pairs = [(os.pipe(), os.pipe()) for _ in range(1 + siblings)]  # (down r/w, up r/w) per recorder
    theirs = [(down[0], up[1]) for down, up in pairs]
    started = subprocess.Popen(
        [sys.executable, "-c", f"from gradlab.tracking.recorder.server import serve; serve({theirs[0][0]}, {theirs[0][1]}, "
                               f"{theirs[1:]!r})"],
        pass_fds=[fd for pair in theirs for fd in pair], stdin=subprocess.DEVNULL)
    for fd in (fd for pair in theirs for fd in pair):
        os.close(fd)
    started.wait()
    return [(down[1], up[0]) for down, up in pairs]


class Recorder:
    """One recorder process: a RunSink (gradlab.tracking.sink)."""

    def __init__(self, down_w: int, up_r: int, first: "Recorder | None" = None):
        """The client of the recorder at the other end of these pipes: the first of a spawn (known
        by the pid it says first) or a sibling forked by it (`first`: known by its pipes alone)."""
        self.first = first
        self._pipe = Connection(down_w, readable=False)
        # A thread writes to the pipe, so the trainer need not wait for the recorder to read: a run's
        # end is a megabyte or so, and the recorder takes it in only once it is through the last one.
        # At most OUTBOX requests wait: a sweep that trains faster than it records holds that much.
        self._outbox: queue.Queue = queue.Queue(maxsize=OUTBOX)
        self._broken = False
        self._writer = threading.Thread(target=self._write, name="gradlab-recorder-pipe", daemon=True)
        self._writer.start()
        self._recv = Connection(up_r, writable=False)
        self._keys = 0
        self._failed: list[Failed] = []  # failures said by the recorder, not yet raised or reported
        self._training: set[int] = set()  # runs started and not yet sent their end
        self.run_ids: dict[int, str] = {}
        self._starting: dict[int, tuple[str, str]] = {}  # key -> (experiment, start token)
        self.holds_runs = False  # until then the recorder holds nothing worth waiting for
        self.uri: str | None = None
        self.pid = self._born = None  # a sibling's comes with its first reply
        self._stopped_looks = 0
        self.stuck = False  # found stopped, and killed
        if first is None:
            self.pid = self._first_message()
            self._born = process_start(self.pid)  # with the pid: a pid reused by another process is not ours

    @classmethod
    def group(cls, siblings: int = 0) -> list["Recorder"]:
        """A recorder process and its siblings, each with its client."""
        pipes = spawn(siblings)
        first = cls(*pipes[0])
        return [first, *(cls(down, up, first) for down, up in pipes[1:])]

    def _first_message(self) -> int:
        """What a recorder says once it has started (its pid); it may die before then (kill -9)."""
        try:
            said = self._recv.recv()
        except (EOFError, OSError):
            raise RecorderGone("the gradlab recorder process stopped as it started; nothing was recorded, run again") from None
        assert isinstance(said, Pid), said
        return said.pid

    def alive(self) -> bool:
        if self.pid is None:  # a sibling that has not said its pid yet lives as long as the first
            return not self._broken and self.first.alive()
        return not self._broken and not self.stuck and alive(self.pid, self._born)

    def watch(self) -> None:
        """One look at the recorder process (every WATCH_EVERY s, by Registry's watcher): one
        found stopped STUCK_LOOKS times in a row is killed; its pipes close, and whoever waits on
        it (the trainer, a sweep's end) ends its runs as for a recorder that died."""
        if self.pid is None or self.stuck:
            return
        if not stopped(self.pid, self._born):
            self._stopped_looks = 0
            return
        self._stopped_looks += 1
        if self._stopped_looks >= STUCK_LOOKS:
            self.stuck = True
            _kill(self.pid)

    def close(self, timeout: float) -> None:
        """Let the recorder finish what it was sent, then go."""
        if not self.holds_runs and self._stop_idle():
            return
        end = time.monotonic() + timeout
        # Waits end when the recorder does: one stopped is killed by the watcher, and a dead one's
        # pipe fails the writer at once (it blocked on a full pipe for `timeout` before).
        while not self._put_within(None, end):  # the writer sends what waits, then the end
            pass
        while self._writer.is_alive() and time.monotonic() < end:
            self._writer.join(WATCH_EVERY)
        if not self.holds_runs:  # it is creating a store: let it finish alone, nothing of ours waits on it
            return
        self._drain(end)  # done when it closes its end of the pipe
        if self.pid is not None and alive(self.pid, self._born):  # a stuck recorder must not hang the exit forever
            _kill(self.pid)

    def _put_within(self, request, end: float) -> bool:
        """Into the outbox, unless it stays full while the recorder is gone or time is up (True)."""
        try:
            self._outbox.put(request, timeout=WATCH_EVERY)
            return True
        except queue.Full:
            return not self.alive() or time.monotonic() >= end

    def _drain(self, end: float) -> None:
        try:
            while time.monotonic() < end:
                if self._recv.poll(WATCH_EVERY):
                    self._recv.recv()
                elif not self.alive():
                    return
        except (EOFError, OSError):
            pass

    def _stop_idle(self) -> bool:
        """Kill a recorder that holds no run, unless it is creating a SQLite store (killing that
        could leave a half-made database): holding the creation lock proves it is not."""
        if self.first is not None:  # a sibling is told to go like one that holds runs
            return False
        db = sqlite_path(self.uri) if self.uri else None
        if db is None or not db.parent.is_dir():
            if alive(self.pid, self._born):
                _kill(self.pid)
            return True
        try:
            with creation_lock(db, blocking=False):
                if alive(self.pid, self._born):
                    _kill(self.pid)
        except BlockingIOError:
            return False
        return True

    # ------------------------------------------------------------------- sending
    def send(self, request) -> object:
        """Send one request; wait for the answer of those that have one."""
        if not isinstance(request, REQUESTS):
            raise TypeError(f"the recorder has no request {type(request).__name__}")
        if isinstance(request, Ask) and request.query not in QUERIES:
            raise TypeError(f"the recorder answers {QUERIES}, not {request.query!r}")
        self.poll()
        if self._broken:
            raise self._gone()
        while True:
            try:
                self._outbox.put(request, timeout=WATCH_EVERY)
                break
            except queue.Full:  # the writer waits on a full pipe: as long as the recorder lives
                if not self.alive():
                    raise self._gone() from None
        if not isinstance(request, ANSWERED):
            return None
        while not isinstance(reply := self._next(), Answer):
            pass
        self._raise_failed()  # said while it was answered: none is left behind
        return reply.value

    def _raise_failed(self) -> None:
        """The first failure said (those after it follow from it, as a store that could not be opened)."""
        if self._failed:
            first, self._failed = self._failed[0], []
            raise TrackingError(first.text)

    def _write(self) -> None:
        """The writer thread: requests down the pipe in order, then None (the end) and stop."""
        while True:
            request = self._outbox.get()
            try:
                self._pipe.send(request)
            except OSError:
                self._broken = True
            finally:
                self._outbox.task_done()
            if request is None:
                return

    def flush(self) -> None:
        """Until every request sent is in the recorder's hands (read, not yet done): a crash of
        this process (a segfault in a sweep's next batch) then loses none of them."""
        with self._outbox.all_tasks_done:
            while self._outbox.unfinished_tasks:
                if not self.alive():
                    raise self._gone()
                self._outbox.all_tasks_done.wait(WATCH_EVERY)

    def _gone(self) -> TrackingError:
        if self.stuck:
            return RecorderGone("the gradlab recorder process was stopped (SIGSTOP) and stayed so: it was killed")
        return RecorderGone("the gradlab recorder process stopped")

    def _next(self):
        """The next reply; made runs are noted, failures kept."""
        try:
            reply = self._recv.recv()
        except (EOFError, OSError):
            raise self._gone() from None
        if isinstance(reply, Started):
            self.run_ids.update(reply.ids)
        elif isinstance(reply, Pid):  # a sibling's first word
            self.pid, self._born = reply.pid, process_start(reply.pid)
        elif isinstance(reply, Failed):
            self._failed.append(reply)
        return reply

    def poll(self) -> None:
        """Raise now if the store itself failed, or the record of a run still training (never
        blocks); a failure of an ended run's record is kept for `sync` or `failures`."""
        while self._recv.poll():
            self._next()
        for f in self._failed:
            if not f.keys or self._training.intersection(f.keys):
                self._failed.remove(f)
                raise TrackingError(f.text)

    def failures(self) -> list[str]:
        """What the recorder has said went wrong, each once (never blocks); one that is gone is
        left to whoever sends next."""
        try:
            while self._recv.poll():
                self._next()
        except (RecorderGone, EOFError, OSError):
            pass
        said, self._failed = [f.text for f in self._failed], []
        return said

    def finish_here(self, keys: list[int], run_ends: list[RunEnd]) -> None:
        """The recorder is gone: write these ends from this process (tracking.ends)."""
        self._take_replies()
        ends.write_here(self.uri, [(self.run_ids.get(key), self._starting.get(key)) for key in keys], run_ends)

    def _take_replies(self) -> None:
        """Every reply the recorder sent before it went (its runs' ids among them)."""
        try:
            while self._recv.poll():
                self._next()
        except (TrackingError, EOFError, OSError):
            pass

    def held(self) -> list[int]:
        """The keys of every run this recorder was asked to make."""
        return sorted({*self.run_ids, *self._starting})

    # ---------------------------------------------------------------- the interface
    def open(self, uri: str | None = None) -> str:
        uri = uri or tracking_uri()
        preflight(uri)  # fail fast in this process: it needs no mlflow
        self.uri = uri
        self.send(Open(uri))
        return uri

    def start(self, specs: list[RunSpec]) -> list[int]:
        """Create runs (not waited for); returns the keys that name them."""
        keys = tuple(range(self._keys + 1, self._keys + 1 + len(specs)))
        self._keys += len(specs)
        self.holds_runs = True
        # Each run carries a token: if the recorder dies between making a run and saying so, the
        # trainer still finds it (finish_here).
        specs = tuple(replace(s, tags={**s.tags, START_TOKEN: f"{uuid.uuid4().hex}"}) for s in specs)
        self._starting.update({k: (s.experiment, s.tags[START_TOKEN]) for k, s in zip(keys, specs)})
        self._training.update(keys)
        self.send(Start(keys, specs))
        return list(keys)

    def reopen(self, run_id: str) -> int:
        self._keys += 1
        self.holds_runs = True
        self.run_ids[self._keys] = run_id
        self.send(Reopen(self._keys, run_id))
        return self._keys

    def log(self, points: Points) -> None:
        self.send(Log(points))

    def tag(self, key: int, tags: dict[str, str]) -> None:
        self.send(Tag(key, tags))

    def finish(self, keys: list[int], run_ends: list[RunEnd]) -> None:
        self._training.difference_update(keys)
        self.send(Finish(tuple(keys), tuple(run_ends)))

    def sync(self) -> None:
        self.send(Sync())

    def ask(self, query: str, *args):
        return self.send(Ask(query, args))

    def draw(self, run_ids: list[str]) -> tuple[int, list[tuple[str, str]]]:
        """Draw these runs' figures (messages.Draw); (how many were drawn, [(run id, why not)...])."""
        return self.send(Draw(tuple(run_ids)))

    def run_id(self, key: int) -> str:
        while key not in self.run_ids:
            reply = self._next()
            if isinstance(reply, Failed) and key in reply.keys:  # the run was never made
                self._failed.remove(reply)
                raise TrackingError(reply.text)
        return self.run_ids[key]


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
