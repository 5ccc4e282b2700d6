"""A sweep launched by this process, as one object: its context, its parent run, the recorders
that write its children, the trials a search offers its jobs, and its end.

Hydra instantiates the sweeper and the launcher from the config, so they cannot be handed the
sweep: `run_sweep` makes it the one `current()` sweep while Hydra runs, and they take it from
there. Everything below them gets what it needs as arguments (a batch its SweepContext)."""

from __future__ import annotations

import contextlib
import contextvars
import os
import socket
import sys
import time
from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from gradlab import ranking, timings
from gradlab.config import Plots
from gradlab.multirun import answer, figures, grid
from gradlab.multirun.context import VARIABLE, SweepContext
from gradlab.multirun.trials import Trials
from gradlab.describe import provenance
from gradlab.tracking import TrackingError, ends
from gradlab.tracking.store import masked
from gradlab.tracking.spec import RunEnd, RunSpec

PROGRESS_SECONDS = 10.0  # a progress line (off a terminal) and the parent's tags at most this often
# What joblib's loky raises when a worker process dies (SIGKILL, out of memory): the pool stops.
WORKER_DIED = ("TerminatedWorkerError", "BrokenProcessPool")

_current: contextvars.ContextVar["Sweep | None"] = contextvars.ContextVar("gradlab_sweep", default=None)


def current() -> "Sweep | None":
    """The sweep this process is launching, if any (for the Hydra plugins)."""
    return _current.get()


def end_workers(kill: bool = False) -> None:
    """The worker processes started for a sweep end with it: joblib's loky keeps its workers for
    the next call, with the environment (the SweepContext) they were started with, so the next
    sweep of this process (a notebook's) had its jobs nest under this one."""
    loky = sys.modules.get("joblib.externals.loky.reusable_executor")
    executor = getattr(loky, "_executor", None)
    if executor is not None:
        executor.shutdown(wait=True, kill_workers=kill)


@contextlib.contextmanager
def running(sweep: "Sweep"):
    token = _current.set(sweep)
    try:
        yield sweep
    finally:
        _current.reset(token)


@dataclass
class SweepOutcome:
    """How a sweep ended: its parent run, what its jobs did, how many failed."""

    parent_id: str
    name: str
    experiment: str
    counts: dict[str, int]  # jobs, finished, diverged, pruned, failed
    failed: int  # failed or killed jobs, jobs that never ran, and 1 if the sweep itself stopped
    error: str | None = None  # what stopped the sweep itself


@dataclass
class Sweep:
    context: SweepContext | None = None
    search: bool = False
    trials: Trials = field(default_factory=Trials)
    tags: dict[str, str] = field(default_factory=dict)  # written with the parent's end
    recorder: object = None  # the parent run's recorder
    key: int | None = None  # the parent run's key there
    expected: int | None = None  # children the sweep should leave
    pool: object = None  # the recorders of its batched launcher
    plots: tuple = (Plots.auto, 100)  # tracking.plots and tracking.plots_max_children: which children get figures
    outcome: SweepOutcome | None = None
    _progress: dict = field(default_factory=dict)  # when it started, last said, last tagged

    # ------------------------------------------------------------------------- begin
    def begin(self, config: DictConfig, loader) -> None:
        """Check every job, open the store and the parent run (or the resumed one); raises
        SweepRefused (bad jobs) or TrackingError (the store) before any job has run."""
        from gradlab.tracking import REGISTRY, tracking_uri

        name, experiment = names(config)
        self.search = grid.is_search(config)
        launcher = str(config.hydra.launcher.get("_target_", ""))
        # Started first, so that its imports overlap the grid check; the batched launcher records
        # with `recorders` processes, forked from this one.
        self.recorder = REGISTRY.shared(max(0, int(config.hydra.launcher.get("recorders", 1)) - 1)
                                        if launcher.endswith("BatchedLauncher") else 0)
        jobs, varied = grid.jobs(config), grid.varied_keys(config)
        what = f"{len(jobs)} jobs" if jobs is not None else f"a search of {config.hydra.sweeper.get('n_trials', '?')} trials"
        uri = tracking_uri()
        print(f"gradlab: sweep {name!r}: {what} varying {', '.join(varied) or 'nothing'}, into experiment "
              f"{experiment!r} at {masked(uri)}; checking every job first", flush=True)
        self.recorder.open(uri)  # not waited for: a fresh store is made while the grid is checked
        try:
            grid.refuse_bad_jobs(config, loader, name, jobs)
        except BaseException:
            _settle(self.recorder)
            raise
        shash = grid.sweep_hash(config)
        # A resume claims its sweep: the look-up and the parent's (re)opening under the store's
        # lock, so that of two resumes at once the second finds the first's parent RUNNING, held
        # by a live process, and refuses, rather than train every remaining job a second time.
        if config.tracking.skip_finished:
            self.recorder.sync()  # the store made first: its creation takes the same lock
        with _claim_lock(uri) if config.tracking.skip_finished else contextlib.nullcontext():
            resumed = self.recorder.ask("latest_sweep", experiment, shash) if config.tracking.skip_finished else None
            if resumed is not None and resumed.status == "RUNNING" and _held(resumed):
                _settle(self.recorder)
                raise TrackingError(f"sweep {name!r} is being run by process {resumed.tag('pid')} on "
                                    f"{resumed.tag('host')} (parent run {resumed.id}): wait for it to end, or stop it, "
                                    "then resume")
            if resumed is None:
                self.key = self.recorder.start([_parent_spec(config, name, experiment, jobs, shash, varied)])[0]
            else:
                self.key = self.recorder.reopen(resumed.id)
                self.recorder.tag(self.key, {k: v for k, v in provenance().items() if k in OWNER})
                print(f"gradlab: resuming sweep {name!r} in parent run {resumed.id}; jobs that have a result are skipped")
            parent_id = self.recorder.run_id(self.key)
            self.recorder.sync()  # the claim is in the store before the lock goes
        # Each job should leave a child run, unless it is skipped for a finished twin elsewhere.
        self.expected = len(jobs) if jobs and not config.tracking.skip_finished else None
        size = len(jobs) if jobs is not None else config.hydra.sweeper.get("n_trials")
        self.plots = (Plots(_value(config.tracking.plots)), int(config.tracking.plots_max_children))
        self.context = SweepContext(parent_id, name, experiment, uri, varied, os.getpid(),
                                    int(size) if isinstance(size, int) else None)
        os.environ[VARIABLE] = self.context.to_json()  # what a worker process inherits
        self._progress["started"] = time.monotonic()  # the first batch's time counts (and the ETA with it)

    def annotate(self, tags: dict[str, str]) -> None:
        """Tags for the parent run, written with its end (a search's study and best trial); a
        `gradlab.error.message` among them fails the sweep."""
        self.tags.update(tags)

    def progress(self, done: int, total: int, diverged: int) -> None:
        """Jobs done so far: on a terminal a line kept up to date; else (a CI log, a Slurm file) a
        plain line every PROGRESS_SECONDS; and on the parent run, as tags the UI shows while it runs."""
        now = time.monotonic()
        started = self._progress.setdefault("started", now)
        rate = (now - started) / done if done else 0.0
        eta = f", about {_duration(rate * (total - done))} to go" if done and done < total else ""
        line = f"{done}/{total} jobs done, {diverged} diverged, {_duration(now - started)} so far{eta}"
        if sys.stderr.isatty():
            print(f"\r  {line}   ", end="", file=sys.stderr, flush=True)
        elif now - self._progress.get("said", 0.0) >= PROGRESS_SECONDS or done == total:
            print(f"gradlab: sweep {self.context.name if self.context else ''}: {line}", flush=True)
            self._progress["said"] = now
        if self.context is not None and now - self._progress.get("tagged", 0.0) >= PROGRESS_SECONDS:
            self._progress["tagged"] = now
            try:
                self.recorder.tag(self.key, {"gradlab.jobs_done": f"{done}/{total}", "gradlab.jobs_diverged_so_far": str(diverged)})
            except Exception:  # noqa: BLE001 - the parent's progress is a courtesy; its end says what matters
                pass

    def progress_end(self) -> None:
        if sys.stderr.isatty() and self._progress:
            print(file=sys.stderr)

    def recorders(self, count: int):
        """The batched launcher's recorders: made at its first launch, reused by the next (Optuna
        launches many)."""
        from gradlab.tracking import REGISTRY

        if self.pool is None or len(self.pool.members) != count or not self.pool.alive():
            self.pool = REGISTRY.pool(count)
        return self.pool

    # --------------------------------------------------------------------------- end
    def finish(self) -> SweepOutcome | None:
        """Record the end of the sweep (once; None if it never began): its children counted and
        ranked, the answer on its parent, a summary printed."""
        if self.context is None or self.outcome is not None:
            return self.outcome
        ctx = self.context
        os.environ.pop(VARIABLE, None)
        end_workers()
        # A resumed sweep holds a job twice (an old FAILED try, its re-run): the latest counts. A job is
        # its config and its name: two jobs may share a config hash (differing in run name only).
        latest = {}
        with timings.measure("sweep end: children"):
            found, failures = _children(self.recorder, ctx.parent_id, self.key)
        for c in found:
            latest[(c.tag("config_hash", c.id), c.name)] = c
        for f in failures:
            print(f"gradlab: error: recording a run of sweep {ctx.name!r}: {f}", file=sys.stderr)
        if failures:  # the runs' statuses were set, but something of their record is missing: the sweep failed
            self.tags.setdefault("gradlab.error.message", f"recording {len(failures)} run(s) failed: {failures[0]}")
        children = list(latest.values())
        by_outcome: dict[str, list] = {}
        for c in children:
            by_outcome.setdefault(c.outcome, []).append(c)
        killed = by_outcome.get("killed", [])
        failed = by_outcome.get("failed", []) + killed + by_outcome.get("running", [])
        missing = max(0, self.expected - len(children)) if self.expected else 0  # failed before their run existed
        counts = {"jobs": len(children), "finished": sum(len(by_outcome.get(k, [])) for k in ranking.RESULT),
                  "diverged": len(by_outcome.get("diverged", [])), "pruned": len(by_outcome.get("pruned", [])),
                  "failed": len(failed) + missing}
        # Bookkeeping as tags, not metrics: the UI charts every metric of the experiment beside the children's.
        tags = {**self.tags, **{f"gradlab.jobs_{k}" if k != "jobs" else "gradlab.jobs": str(v) for k, v in counts.items()}}
        with timings.measure("sweep end: answer"):
            found_answer = answer.of(ctx.name, ctx.parent_id, ctx.varied, children, self.search, self.recorder.ask, found)
        tags.update(found_answer.tags)
        try:
            with timings.measure("sweep end: figures"):
                tags["gradlab.figures"], some_without = figures.at_end(*self.plots, ctx.origin(), children, self._drawing())
            if "mlflow.note.content" in tags and some_without:
                tags["mlflow.note.content"] = _with_line(tags["mlflow.note.content"], tags["gradlab.figures"])
        except Exception as e:  # noqa: BLE001 - the children's figures are a courtesy; their records are whole
            print(f"gradlab: the sweep's figures could not be drawn: {type(e).__name__}: {e}", file=sys.stderr)
        stopped = tags.get("gradlab.error.message")  # the sweeper gave up (a search with too many failures)
        with timings.measure("sweep end: parent"):
            ends.end_parent(self.recorder, self.key, RunEnd("failed" if failed or missing or stopped else "completed", {},
                                                            tags, files=found_answer.files, plot_data=found_answer.plot_data))
        pruned = f"{counts['pruned']} pruned, " if counts["pruned"] else ""
        stops = f"{len(failed) - len(killed)} failed" + (f", {len(killed)} killed" if killed else "")
        print(f"gradlab: sweep {ctx.name!r}: {len(children)} jobs: {counts['finished']} finished, "
              f"{counts['diverged']} diverged, {pruned}{stops}  (parent run {ctx.parent_id})")
        if missing:
            worker_died = tags.get("gradlab.error.type") in WORKER_DIED
            print(f"  {missing} job(s) never started: a worker died ({tags['gradlab.error.type']})" if worker_died else
                  f"  {missing} job(s) ended before their run existed; their errors are above")
        for c in failed:
            print(f"  {c.outcome.upper()} [{c.tag('overrides')}]: {_why(c)}".rstrip())
        if children:
            print(f"  compare them: make compare EXPERIMENT={ctx.experiment}")
        self.outcome = SweepOutcome(ctx.parent_id, ctx.name, ctx.experiment, counts,
                                    len(failed) + missing + bool(stopped), stopped)
        return self.outcome

    def _drawing(self):
        """Who draws the children's figures at the end: the launcher's pool, else the sweep's recorder."""
        return self.pool.draw if self.pool is not None and self.pool.alive() else self.recorder.draw

    def abort(self, signum: int) -> None:
        """A signal stopped the sweep: the ends every recorder was sent are written first (the runs
        of earlier batches, recorded while the next one trained, finished training: they keep their
        record), then its parent run is KILLED."""
        from gradlab import signals
        from gradlab.tracking import REGISTRY

        if self.context is None or self.outcome is not None:
            return
        os.environ.pop(VARIABLE, None)
        end_workers(kill=True)
        ctx = self.context
        self.outcome = SweepOutcome(ctx.parent_id, ctx.name, ctx.experiment, {}, 1, f"stopped by signal {signum}")
        with signals.deferred():  # a second Ctrl-C here would lose what is being written
            try:
                REGISTRY.sync_all()
            except Exception:  # noqa: BLE001 - a dead recorder's runs are ended below, at the parent's end
                pass
            try:
                self.recorder.finish([self.key], [RunEnd("killed", {}, {"gradlab.signal": str(signum)})])
                self.recorder.sync()
            except Exception:  # noqa: BLE001 - the store may be the reason we are going down; reap can close it
                pass


# ------------------------------------------------------------------------------ helpers
def names(config: DictConfig) -> tuple[str, str]:
    """(the sweep's name, its experiment): a sweep file names both; an ad-hoc grid is named after
    its recipe, else "multirun"."""
    from gradlab.describe import experiment_name

    file = config.hydra.job.config_name
    sweep_file = None if file == "config" else file
    recipe = config.hydra.runtime.choices.get("experiment")
    return sweep_file or recipe or "multirun", experiment_name(config.tracking.experiment, recipe, sweep_file)


def _parent_spec(config: DictConfig, name: str, experiment: str, jobs: list | None, shash: str, varied: list[str]) -> RunSpec:
    import json

    from gradlab.describe import provenance

    sweep_yaml = OmegaConf.to_yaml(OmegaConf.create({"sweeper": OmegaConf.to_container(config.hydra.sweeper),
                                                      "overrides": list(config.hydra.overrides.task)}))
    params = {"sweep.params": json.dumps(grid.params(config)), "sweep.jobs": str(len(jobs)) if jobs else "unknown",
              "sweep.launcher": str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1],
              "sweep.sweeper": str(config.hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1]}
    tags = {**provenance(), "gradlab.sweep": name, "gradlab.role": "sweep", "gradlab.sweep_hash": shash,
            "gradlab.outcome": "running", "gradlab.varied": ",".join(varied)}
    files = {"sweep.yaml": sweep_yaml}
    if jobs is not None:
        files["jobs.txt"] = "\n".join(" ".join(j) for j in jobs) + "\n"
    # Two runs of one sweep file are told apart by their start: "lr_scale_optimizer 12-01 14:52:07"
    return RunSpec(experiment, f"{name} {time.strftime('%m-%d %H:%M:%S')}", params, tags, files=files)


OWNER = ("gradlab.host", "gradlab.pid", "gradlab.pid_start")  # the parent's tags that name the process running it


def _claim_lock(uri: str):
    """The store's creation lock (a SQLite store's; a server has none: two resumes at once there
    are told apart only once one's parent is RUNNING)."""
    from gradlab.tracking.store import creation_lock, sqlite_path

    db = sqlite_path(uri)
    return creation_lock(db) if db is not None else contextlib.nullcontext()  # its folder made by the store's opening


def _held(parent) -> bool:
    """A RUNNING parent's process still runs (one of another host is taken to: it cannot be seen;
    one with no pid recorded holds nothing)."""
    from gradlab.tracking.processes import alive_here

    if parent.tag("host") != socket.gethostname():
        return True
    return bool(alive_here(parent.tag("host"), parent.tag("pid"), parent.tag("pid_start")))


def _settle(recorder) -> None:
    """Wait for what the recorder was sent (the store it is making): nothing of gradlab's goes on
    in the background once this process has exited."""
    from gradlab.tracking import TrackingError

    try:
        recorder.sync()
    except TrackingError:
        pass  # the sweep is refused for its own reasons; the store's come up at the next run


def _children(recorder, parent_id: str, parent_key: int) -> tuple[list, list[str]]:
    """The sweep's child runs once every record sent is written, and what the recorders said
    failed in them. Every job is over by now, so a run a dead recorder of this process still
    holds RUNNING is ended here. Read from the store if the parent's recorder died."""
    from gradlab.tracking import REGISTRY, RecorderGone, Store, TrackingError, query

    failures = [f for rec in REGISTRY.everyone() for f in rec.failures()]
    try:
        REGISTRY.sync_all()
    except RecorderGone:
        pass
    except TrackingError as e:  # said while the last records were written
        failures.append(str(e))
    REGISTRY.end_orphans(spare=(recorder, parent_key))  # the parent's end is the sweep's, written next
    try:
        return recorder.ask("children", parent_id), failures
    except RecorderGone:
        return query.children(Store(recorder.uri), parent_id), failures


def _with_line(note: str, line: str) -> str:
    """The parent's description with a paragraph near its start, after the convergence map where
    there is one (the page shows a description's start; MLflow keeps 8000 characters of it)."""
    parts = note.split("\n\n")
    at = 2 if len(parts) > 1 and parts[1].startswith("![") else 1
    return "\n\n".join([*parts[:at], line, *parts[at:]])


def _value(v) -> str:
    """An enum node's value as read from a DictConfig (its member), or a plain string."""
    return getattr(v, "value", v)


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _why(run) -> str:
    """What ended a run that did not finish."""
    if run.outcome == "killed":
        return run.tag("reason") or (f"stopped by {run.tag('signal')}" if run.tag("signal") else "")
    return f"{run.tag('error.type')} {run.tag('error.message')}"
