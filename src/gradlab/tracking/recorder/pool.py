"""The recorder processes of this process, and a sweep's pool of them.

`Registry` holds them (one per process, REGISTRY: the processes own its pipes): the shared one
that a single run starts before torch is imported and every sweep reuses as its first, and the
other members of sweeps' pools. `Recorders` deals a sweep's runs out between several, so that
recording (MLflow writes, figures) keeps every core busy, behind the calls of one (RunSink)."""

from __future__ import annotations

import atexit
import threading
import time

from gradlab.tracking import ends
from gradlab.tracking.recorder.client import WATCH_EVERY, Recorder, RecorderGone
from gradlab.tracking.spec import RunEnd, RunSpec
from gradlab.tracking.stream import Points


class Registry:
    def __init__(self):
        self.first: Recorder | None = None
        self.siblings: list[Recorder] = []  # forked with the first
        self.others: list[Recorder] = []  # pools' members started later
        self.closing: list[Recorder] = []  # being shut down: still watched
        self._exit_hooked = False

    def shared(self, siblings: int = 0) -> Recorder:
        """The shared recorder, started (with `siblings` forked from it) if there is none alive."""
        if self.first is None or not self.first.alive():
            self.first, *self.siblings = Recorder.group(siblings)
            if not self._exit_hooked:
                atexit.register(self.shutdown)
                threading.Thread(target=self._watch, name="gradlab-recorder-watch", daemon=True).start()
                self._exit_hooked = True
        return self.first

    def _watch(self) -> None:
        """The watcher thread: a look at every recorder each WATCH_EVERY s (Recorder.watch), also
        while the trainer waits on one, or on the store one of them holds locked."""
        while True:
            time.sleep(WATCH_EVERY)
            for rec in [*self.everyone(), *self.closing]:
                rec.watch()

    def everyone(self) -> list[Recorder]:
        first = [self.first, *self.siblings] if self.first is not None else []
        return list(dict.fromkeys([*first, *self.others]))

    def shutdown(self, timeout: float = 300.0) -> None:
        """Let every recorder finish what it was sent, then go."""
        recs = self.everyone()
        self.closing = recs
        self.first, self.siblings, self.others = None, [], []
        for rec in recs:
            rec.close(timeout)
        self.closing = []

    def sync_all(self) -> None:
        """Wait until every recorder that holds runs has written what it was sent."""
        for rec in self.everyone():
            if rec.alive() and rec.holds_runs:
                rec.sync()

    def end_orphans(self, spare: tuple[Recorder, int] | None = None) -> None:
        """The runs of recorders that died, and that the store still holds RUNNING, end FAILED
        from here, but `spare` (a recorder, a key) (tracking.ends: the ladder's fourth step)."""
        for rec in self.everyone():
            if rec.holds_runs and not rec.alive():
                keys = [k for k in rec.held() if spare != (rec, k)]
                rec.finish_here(keys, [ends.lost()] * len(keys))

    def pool(self, count: int) -> "Recorders":
        """`count` recorders for a sweep: the shared one, its living siblings, new ones for the rest."""
        first = self.shared(count - 1)
        members = [first, *[r for r in self.siblings if r.alive()][:count - 1]]
        members += [Recorder.group()[0] for _ in range(count - len(members))]
        self.others += [m for m in members[1:] if m not in self.others and m not in self.siblings]
        return Recorders(members, self)


REGISTRY = Registry()


class Recorders:
    """Several recorders behind the calls of one (RunSink): run k goes to member k mod their number.
    A member that dies (or is stopped, then killed) takes only its own runs' record along: the
    others go on training and recording; its runs' ends are written from this process (its
    step metrics after it died are lost, history.csv has them). RecorderGone is raised once
    every member is gone."""

    def __init__(self, members: list[Recorder], registry: Registry):
        self.members, self.registry = members, registry
        self.dead: set[Recorder] = set()  # members gone while this pool was in use
        self.route: dict[int, tuple[Recorder, int]] = {}  # our key -> (member, its key)
        self._keys = 0
        self.uri: str | None = None

    def alive(self) -> bool:
        """Every member still running, the first still the shared recorder."""
        return self.members[0] is self.registry.first and all(m.alive() for m in self.members)

    def open(self, uri: str | None = None) -> str:
        for m in self.members:
            uri = m.open(uri)
        self.uri = uri
        return uri

    def start(self, specs: list[RunSpec]) -> list[int]:
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

    def _living(self, member: Recorder, call) -> bool:
        """call() on a member not known dead; False if it is (or turns out) gone."""
        if member in self.dead:
            return False
        try:
            call()
            return True
        except RecorderGone:
            self.dead.add(member)
            if len(self.dead) == len(self.members):
                raise
            return False

    def log(self, points: Points) -> None:
        for member, keys in self._split(points).items():
            self._living(member, lambda: member.log({self.route[k][1]: points[k] for k in keys}))

    def finish(self, keys: list[int], run_ends: list[RunEnd]) -> None:
        by_key = dict(zip(keys, run_ends))
        for member, ks in self._split(keys).items():
            local, mine = [self.route[k][1] for k in ks], [by_key[k] for k in ks]
            if not self._living(member, lambda: member.finish(local, mine)):
                member.finish_here(local, [ends.recorded_here(e) for e in mine])

    def sync(self) -> None:
        for m in self.members:
            self._living(m, m.sync)

    def flush(self) -> None:
        for m in self.members:
            self._living(m, m.flush)

    def poll(self) -> None:
        for m in self.members:
            self._living(m, m.poll)

    def ask(self, query: str, *args):
        return self.members[0].ask(query, *args)

    def draw(self, run_ids: list[str]) -> tuple[int, list[tuple[str, str]]]:
        """The runs' figures drawn by the living members side by side (Recorder.draw); a member that
        dies meanwhile leaves its share undrawn, said as such."""
        from concurrent.futures import ThreadPoolExecutor

        living = [m for m in self.members if m not in self.dead and m.alive()]
        if not living:
            return 0, [(r, "no recorder is alive to draw it") for r in run_ids]
        shares = [run_ids[i::len(living)] for i in range(len(living))]

        def draw(member: Recorder, share: list[str]):
            try:
                return member.draw(share) if share else (0, [])
            except RecorderGone:
                return 0, [(r, "its recorder died while drawing") for r in share]

        with ThreadPoolExecutor(len(living)) as threads:
            answers = list(threads.map(draw, living, shares))
        return sum(d for d, _ in answers), [f for _, failed in answers for f in failed]

    def run_id(self, key: int) -> str:
        member, local = self.route[key]
        return member.run_id(local)

    def finish_here(self, keys: list[int], run_ends: list[RunEnd]) -> None:
        """A member died: its runs' ends are written from here; the living members record theirs."""
        by_key = dict(zip(keys, run_ends))
        for member, ks in self._split(keys).items():
            local, mine = [self.route[k][1] for k in ks], [by_key[k] for k in ks]
            if member.alive():
                member.finish(local, mine)
                member.sync()
            else:
                member.finish_here(local, mine)
