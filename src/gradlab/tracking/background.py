"""The recorder: a background process that does a trainer's MLflow work.

It starts before torch is imported, so importing mlflow and opening the store overlap the import
of torch, and logging and drawing figures overlap training. The trainer talks to it through a
pipe with a closed set of messages (the dataclasses below): it sends them in order and the
recorder executes them in order. A message that returns nothing is not waited for; if it fails,
the error comes back and is raised as TrackingError at the trainer's next call. Every message
that starts or ends runs carries several runs at once: a sweep's batch is recorded with as few
messages as a single run.

The recorder ignores SIGINT and SIGTERM (the trainer handles them and sends the ends of its
runs); if the trainer dies without ending a run, the recorder marks it KILLED.
"""

from __future__ import annotations

import atexit
import gc
import itertools
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

from gradlab import timings
from gradlab.tracking.processes import alive, process_start
from gradlab.tracking.spec import RunEnd, RunSpec
from gradlab.tracking.store import (TrackingError, creation_lock, is_store_error, preflight, sqlite_path, tracking_uri,
                                    write_error)
from gradlab.tracking.stream import Points


# ----------------------------------------------------------------------- the messages
@dataclass(frozen=True)
class Open:
    """Open (or create) the store; then load matplotlib while the trainer is busy."""
    uri: str


@dataclass(frozen=True)
class Start:
    """Create runs; `keys` name them in later messages (their ids come back as they exist)."""
    keys: tuple[int, ...]
    specs: tuple[RunSpec, ...]


@dataclass(frozen=True)
class Log:
    """Step metrics of several runs."""
    points: Points


@dataclass(frozen=True)
class Finish:
    """The ends of several runs: metrics, tags, files, figures, status."""
    keys: tuple[int, ...]
    ends: tuple[RunEnd, ...]


@dataclass(frozen=True)
class Reopen:
    """A finished run RUNNING again under a key (a sweep's parent, resumed)."""
    key: int
    run_id: str


@dataclass(frozen=True)
class Sync:
    """Answered once everything sent before it is done."""


@dataclass(frozen=True)
class Ask:
    """A read (a function of tracking.query, by name, with its arguments); answered with its result."""
    query: str
    args: tuple = ()


ANSWERED = (Sync, Ask)  # the sender waits for these
OUTBOX = 32  # messages waiting to be written, at most
QUERIES = ("finished", "children", "latest_sweep")  # what Ask may call


# ---------------------------------------------------------------- the trainer's side
START_TOKEN = "gradlab.start_token"


class RecorderGone(TrackingError):
    """The recorder process died (killed, out of memory): the trainer ends what it held."""


class Recorder:
    _shared: "Recorder | None" = None
    _others: list = []  # recorders of a pool besides the shared one

    def __init__(self, siblings: int = 0):
        """A recorder process, and `siblings` more forked from it once it has imported mlflow and
        matplotlib (a sweep's pool: each import is paid once)."""
        pairs = [(os.pipe(), os.pipe()) for _ in range(1 + siblings)]  # (down r/w, up r/w) per recorder
        theirs = [(down[0], up[1]) for down, up in pairs]
        # A plain interpreter on inherited pipes: nothing of this process crosses over (no SQLite
        # handle, no start method of a launcher's worker pool, no __main__ re-import).
        # It leaves this process's tree at once (serve forks, the child it started exits): a
        # launcher that kills its worker's tree (joblib's loky: SIGKILL to every descendant) must
        # not take the recorder along, which then ends the runs its trainer left.
        started = subprocess.Popen(
            [sys.executable, "-c", f"from gradlab.tracking.background import serve; serve({theirs[0][0]}, {theirs[0][1]}, "
                                   f"{theirs[1:]!r})"],
            pass_fds=[fd for pair in theirs for fd in pair], stdin=subprocess.DEVNULL)
        for fd in (fd for pair in theirs for fd in pair):
            os.close(fd)
        self.first = None
        self._attach(pairs[0][0][1], pairs[0][1][0])
        started.wait()
        self.pid = self._first_message("pid")
        self._born = process_start(self.pid)  # with the pid: a pid reused by another process is not ours
        self.siblings = [Recorder._sibling(down[1], up[0], self) for down, up in pairs[1:]]
        atexit.register(Recorder.shutdown)

    @classmethod
    def _sibling(cls, down_w: int, up_r: int, first: "Recorder") -> "Recorder":
        """A recorder forked by `first`'s process: not our child, so known by its pipes alone."""
        rec = cls.__new__(cls)
        rec.pid, rec.first, rec.siblings = None, first, []
        rec._attach(down_w, up_r)
        return rec

    def _attach(self, down_w: int, up_r: int) -> None:
        self._pipe = Connection(down_w, readable=False)
        # A thread writes to the pipe, so the trainer need not wait for the recorder to read: a run's
        # end is a megabyte or so, and the recorder takes it in only once it is through the last one.
        # At most OUTBOX messages wait: a sweep that trains faster than it records holds that much.
        self._outbox: queue.Queue = queue.Queue(maxsize=OUTBOX)
        self._broken = False
        self._writer = threading.Thread(target=self._write, name="gradlab-recorder-pipe", daemon=True)
        self._writer.start()
        self._recv = Connection(up_r, writable=False)
        self._keys = 0
        self.run_ids: dict[int, str] = {}
        self._starting: dict[int, tuple[str, str]] = {}  # key -> (experiment, start token)
        self.holds_runs = False  # until then the recorder holds nothing worth waiting for
        self.uri: str | None = None

    def _first_message(self, kind: str):
        """What a recorder says once it has started (its pid); it may die before then (kill -9)."""
        try:
            got, value = self._recv.recv()
        except (EOFError, OSError):
            raise RecorderGone("the gradlab recorder process stopped as it started; nothing was recorded, run again") from None
        assert got == kind, got
        return value

    def alive(self) -> bool:
        if self.first is not None:
            return not self._broken and self.first.alive()
        return not self._broken and alive(self.pid, self._born)

    @classmethod
    def shared(cls, siblings: int = 0) -> "Recorder":
        if cls._shared is None or not cls._shared.alive():
            cls._shared = cls(siblings)
        return cls._shared

    @classmethod
    def shutdown(cls, timeout: float = 300.0) -> None:
        """Let every recorder finish what it was sent, then go."""
        recs = cls.everyone()
        cls._shared, cls._others = None, []
        for rec in recs:
            rec._close(timeout)

    @classmethod
    def everyone(cls) -> list["Recorder"]:
        """Every recorder of this process."""
        first = [cls._shared, *cls._shared.siblings] if cls._shared is not None else []
        return list(dict.fromkeys([*first, *cls._others]))

    @classmethod
    def sync_all(cls) -> None:
        """Wait until every recorder of this process has written what it was sent."""
        for rec in cls.everyone():
            if rec.alive() and rec.holds_runs:
                rec.sync()

    @classmethod
    def end_orphans(cls, spare: tuple["Recorder", int] | None = None) -> None:
        """The runs made by recorders of this process that died, and that the store still holds
        RUNNING, end FAILED from here, but `spare` (a recorder, a key): their ends were sent and
        not written (a sweep trains on while they are), or never made. What was logged stays."""
        for rec in cls.everyone():
            if rec.holds_runs and not rec.alive():
                keys = [k for k in sorted({*rec.run_ids, *rec._starting}) if spare != (rec, k)]
                lost = RunEnd("failed", {}, {"gradlab.error.type": "RecorderGone", "gradlab.error.message":
                              "its end was never written: its recorder process stopped first (what it logged before stays)"})
                rec.finish_here(keys, [lost] * len(keys))

    def _close(self, timeout: float) -> None:
        if not self.holds_runs and self._stop_idle():
            return
        self._outbox.put(None)  # the writer sends what waits, then the end
        self._writer.join(timeout)
        if not self.holds_runs:  # it is creating a store: let it finish alone, nothing of ours waits on it
            return
        self._drain(timeout)  # done when it closes its end of the pipe
        if self.first is None and alive(self.pid, self._born):  # a stuck recorder must not hang the exit forever
            _kill(self.pid)

    def _drain(self, timeout: float) -> None:
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end and self._recv.poll(max(0.0, end - time.monotonic())):
                self._recv.recv()
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
    def send(self, message) -> object:
        """Send one message; wait for the answer of those that have one."""
        if type(message) not in HANDLERS:
            raise TypeError(f"the recorder has no message {type(message).__name__}")
        if isinstance(message, Ask) and message.query not in QUERIES:
            raise TypeError(f"the recorder answers {QUERIES}, not {message.query!r}")
        self.poll()
        if self._broken:
            raise self._gone()
        self._outbox.put(message)
        if not isinstance(message, ANSWERED):
            return None
        failed = None  # an earlier message's error: raised once this answer is in, so none is left behind
        while True:
            kind, value = self._next()
            if kind == "answer":
                break
            if kind == "error":
                failed = failed or value
        if failed:
            raise TrackingError(failed)
        return value

    def _write(self) -> None:
        """The writer thread: messages down the pipe in order, then None (the end) and stop."""
        while True:
            message = self._outbox.get()
            try:
                self._pipe.send(message)
            except OSError:
                self._broken = True
            if message is None:
                return

    def _gone(self) -> TrackingError:
        return RecorderGone("the gradlab recorder process stopped")

    def _next(self) -> tuple[str, object]:
        """The next reply: ("answer", value), ("error", text) or ("started", {key: run id})."""
        try:
            kind, value = self._recv.recv()
        except (EOFError, OSError):
            raise self._gone() from None
        if kind == "started":
            self.run_ids.update(value)
        return kind, value

    def poll(self) -> None:
        """Raise now if something sent earlier failed (never blocks)."""
        while self._recv.poll():
            kind, value = self._next()
            if kind == "error":
                raise TrackingError(value)

    def failures(self) -> list[str]:
        """What the recorder has said went wrong with messages sent earlier (never blocks); one
        that is gone is left to whoever sends next."""
        said = []
        while True:
            try:
                self.poll()
                return said
            except RecorderGone:
                return said
            except TrackingError as e:
                said.append(str(e))

    def finish_here(self, keys: list[int], ends: list[RunEnd]) -> None:
        """The recorder is gone: write these ends from this process, for each run it had made
        that the store still holds RUNNING (an end it wrote before it died stays)."""
        from gradlab.tracking.store import Store

        self._take_replies()
        store = None
        for key, end in zip(keys, ends):
            store = store or Store(self.uri)
            run_id = self.run_ids.get(key) or _by_token(store, *self._starting.get(key, (None, None)))
            if run_id is None:  # never made
                continue
            if store.client.get_run(run_id).info.status == "RUNNING":
                store.finish(run_id, end, _files(end))

    def _take_replies(self) -> None:
        """Every reply the recorder sent before it went (its runs' ids among them)."""
        try:
            while self._recv.poll():
                self._next()
        except (TrackingError, EOFError, OSError):
            pass

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

    def finish(self, keys: list[int], ends: list[RunEnd]) -> None:
        self.send(Finish(tuple(keys), tuple(ends)))

    def sync(self) -> None:
        self.send(Sync())

    def ask(self, query: str, *args):
        return self.send(Ask(query, args))

    def run_id(self, key: int) -> str:
        while key not in self.run_ids:
            kind, value = self._next()
            if kind == "error":  # the run was never made
                raise TrackingError(value)
        return self.run_ids[key]


def _by_token(store, experiment: str | None, token: str | None) -> str | None:
    """The run made with this start token, if the recorder got that far."""
    exp = store.client.get_experiment_by_name(experiment) if experiment else None
    if exp is None:
        return None
    found = store.client.search_runs([exp.experiment_id], filter_string=f"tags.`{START_TOKEN}` = '{token}'", max_results=1)
    return found[0].info.run_id if found else None


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class Recorders:
    """Several recorders behind the interface of one: a sweep's runs are dealt out between them,
    so that recording (MLflow writes, figures) keeps every core busy. The first is the shared one."""

    def __init__(self, count: int):
        first = Recorder.shared(count - 1)
        siblings = [r for r in first.siblings if r.alive()][:count - 1]
        fresh = [Recorder() for _ in range(count - 1 - len(siblings))]
        self.members = [first, *siblings, *fresh]
        Recorder._others += [m for m in self.members[1:] if m not in Recorder._others]
        self.route: dict[int, tuple[Recorder, int]] = {}  # our key -> (member, its key)
        self._keys = 0
        self.uri: str | None = None

    def alive(self) -> bool:
        """Every member still running, the first still the shared recorder."""
        return self.members[0] is Recorder._shared and all(m.alive() for m in self.members)

    def open(self, uri: str | None = None) -> str:
        for m in self.members:
            uri = m.open(uri)
        self.uri = uri
        return uri

    def start(self, specs: list[RunSpec]) -> list[int]:
        """Runs dealt out by key: run k goes to member k mod their number."""
        keys = list(range(self._keys + 1, self._keys + 1 + len(specs)))
        self._keys += len(specs)
        for i, member in enumerate(self.members):
            mine = [k for k in keys if k % len(self.members) == i]
            if mine:
                for k, local in zip(mine, member.start([specs[k - keys[0]] for k in mine])):
                    self.route[k] = (member, local)
        return keys

    def _split(self, keys) -> dict[Recorder, list[int]]:
        out: dict[Recorder, list[int]] = {}
        for k in keys:
            out.setdefault(self.route[k][0], []).append(k)
        return out

    def log(self, points: Points) -> None:
        for member, keys in self._split(points).items():
            member.log({self.route[k][1]: points[k] for k in keys})

    def finish(self, keys: list[int], ends: list[RunEnd]) -> None:
        by_key = dict(zip(keys, ends))
        for member, ks in self._split(keys).items():
            member.finish([self.route[k][1] for k in ks], [by_key[k] for k in ks])

    def sync(self) -> None:
        for m in self.members:
            m.sync()

    def poll(self) -> None:
        for m in self.members:
            m.poll()

    def ask(self, query: str, *args):
        return self.members[0].ask(query, *args)

    def run_id(self, key: int) -> str:
        member, local = self.route[key]
        return member.run_id(local)

    def finish_here(self, keys: list[int], ends: list[RunEnd]) -> None:
        """A member died: its runs' ends are written from here; the living members record theirs."""
        by_key = dict(zip(keys, ends))
        for member, ks in self._split(keys).items():
            local, mine = [self.route[k][1] for k in ks], [by_key[k] for k in ks]
            if member.alive():
                member.finish(local, mine)
                member.sync()
            else:
                member.finish_here(local, mine)


# ------------------------------------------------------------------- the recorder's side
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
    state.outbox.send(("started", started))


def _reopen(state: _State, m: Reopen):
    state.store.reopen(m.run_id)
    state.ids[m.key] = m.run_id
    state.open_runs.add(m.key)


def _log(state: _State, m: Log):
    for key, points in m.points.items():
        state.store.log_points(state.ids[key], points)


def _finish(state: _State, m: Finish):
    for key, end in zip(m.keys, m.ends):
        if key not in state.open_runs:  # ended already (sent again after a sibling recorder died)
            continue
        state.open_runs.discard(key)
        state.store.finish(state.ids[key], end, _files(end))
    # The figures' reference cycles, now, before the next run's pile onto them. What survives is
    # the store's and matplotlib's long-lived state (made at the first run): frozen, so that each
    # collection scans one run's objects, not every object of mlflow (~50 ms a run otherwise).
    with timings.measure("gc"):
        gc.collect()
        gc.freeze()


def _files(end: RunEnd) -> dict[str, object]:
    """A run's last artifacts: its files, history.csv, and its figures, drawn here. A figure that
    cannot be drawn is noted in a tag (gradlab.plot_error) rather than failing a sound run."""
    files = dict(end.files)
    if end.history is not None:
        files["history.csv"] = history_csv(end.history)
    if end.plot_data:
        try:
            from gradlab.plots import files as drawn

            files.update(drawn(end.plot_data))
        except Exception as e:  # noqa: BLE001 - recorded, never lost
            end.tags["gradlab.plot_error"] = f"{type(e).__name__}: {e}"
    return files


def history_csv(table: dict, rows_per_part: int = 10_000):
    """Every recorded epoch at full precision (repr round-trips a float exactly), as parts of
    text to write one after the other: a run of millions of epochs is never one string."""
    yield ",".join(table["columns"]) + "\n"
    if table.get("spilled"):  # the older rows, from the files the history spilled them to
        from gradlab.spill import read_spilled

        for parts in read_spilled(table["spilled"], len(table["columns"])):
            yield from _csv_rows(zip(*parts), rows_per_part)
    yield from _csv_rows(zip(table["epochs"], *table["values"]), rows_per_part)


def _csv_rows(rows, rows_per_part: int):
    while part := list(itertools.islice(rows, rows_per_part)):
        yield "".join(",".join([str(e), *map(repr, row)]) + "\n" for e, *row in part)


def _ask(state: _State, m: Ask):
    from gradlab.tracking import query

    return getattr(query, m.query)(state.store, *m.args)


HANDLERS = {Open: _open, Start: _start, Reopen: _reopen, Log: _log, Finish: _finish, Sync: lambda state, m: None,
            Ask: _ask}


def serve(read_fd: int, write_fd: int, siblings: list = ()) -> None:
    """The recorder process: execute messages in order until the pipe closes. Once the slow
    imports are done, fork a sibling for each further pair of pipes (no store is open yet)."""
    if os.fork():  # out of the trainer's process tree (see Recorder): this one goes, its child records
        os._exit(0)
    outbox = Connection(write_fd, readable=False)
    outbox.send(("pid", os.getpid()))  # the trainer knows it by its pid: not its child any more
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
    # MLflow logs each failed store write with its traceback before raising it; the error goes back
    # to the trainer, which says it in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    role = "recorder"
    for i, (r, w) in enumerate(siblings):
        if os.fork() == 0:
            for fd in (read_fd, *(fd for j, pair in enumerate(siblings) if j != i for fd in pair)):
                os.close(fd)
            outbox.close()  # the first one's pipe up
            read_fd, role = r, f"recorder{i + 1}"
            outbox = Connection(w, readable=False)
            break
        os.close(r)
        os.close(w)
    inbox = Connection(read_fd, writable=False)
    state = _State(outbox)
    while True:
        try:
            message = inbox.recv()
        except (EOFError, OSError):
            message = None
        if message is None:
            break
        try:
            with timings.measure(type(message).__name__):
                answer = HANDLERS[type(message)](state, message)
            if isinstance(message, ANSWERED):
                outbox.send(("answer", answer))
        except Exception as e:  # noqa: BLE001 - every failure goes back to the trainer
            if state.store is not None and is_store_error(e):
                e = write_error(e, state.store.uri)
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            try:
                outbox.send(("error", text if isinstance(e, TrackingError) else f"{type(message).__name__}: {text}"))
            except OSError:
                pass
    _end_abandoned(state)
    timings.write(role)
    # Every write is committed; tearing down mlflow, SQLAlchemy and matplotlib only costs time.
    outbox.close()
    os._exit(0)


def _end_abandoned(state: _State) -> None:
    """The trainer went away without ending these runs: they are KILLED."""
    for key in state.open_runs:
        try:
            state.store.set_tags(state.ids[key], {"gradlab.outcome": "killed",
                                                  "gradlab.reason": "the training process ended before recording its end"})
            state.store.end(state.ids[key], "KILLED")
        except Exception:  # noqa: BLE001 - nothing left to tell; reap can close it
            pass
