"""Optuna searches, for gradlab's sweeper (`hydra/sweeper=optuna`).

The search space is written as Hydra's sweep syntax, read as hydra-optuna-sweeper read it:
`interval(a, b)` a uniform float, `tag(log, interval(a, b))` its log scale, `choice(...)` a categorical, `range(a, b, step)` a stepped int (float if any of them is),
both ends included as Optuna's are; a plain value is fixed for every trial.

Trials are asked `n_jobs` at a time (ask-and-tell) and launched together: with the batched
launcher they train as one batch. Each trial's run reports its objective (validation loss, else
training loss) to the trial about `reports` times; one the pruner stops ends as `pruned` and
leaves its batch. A diverged trial is a result (+inf), never a crash of the study.
The study lives in `storage` (default: an Optuna journal beside the MLflow store) under
`study_name` (default: the sweep's name and its parent run), so a sweep resumed with
`tracking.skip_finished=true` continues its study: finished trials stay, interrupted ones run again.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState

from gradlab import safe
from gradlab.multirun.trials import Claim, Trials

SAMPLERS = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
            "grid": optuna.samplers.GridSampler, "cmaes": optuna.samplers.CmaEsSampler,
            "qmc": optuna.samplers.QMCSampler}
PRUNERS = {"none": optuna.pruners.NopPruner, "median": optuna.pruners.MedianPruner,
           "percentile": optuna.pruners.PercentilePruner, "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
           "hyperband": optuna.pruners.HyperbandPruner}
# A FAIL trial without this user attr was interrupted (a signal, a dead process): it runs again.
FAILED = "gradlab.job_failed"
REQUEUED = "gradlab.requeued"  # study attr: the interrupted trials already asked again
# A trial's asking process, "host:pid:start": its RUNNING trials are another live search's, not
# interrupted ones, while that process lives (two searches on one study share it, as Optuna's do).
OWNER = "gradlab.owner"
# Trials asked at once are asked before any of them trains: beyond this a batch only waits.
MAX_JOBS = 10_000

optuna.logging.set_verbosity(optuna.logging.WARNING)  # gradlab prints a line per trial instead


class SearchError(ValueError):
    """A search setting that cannot work; the message names it and what it may be."""


# ------------------------------------------------------------------------------- space
def space(params: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(the searched distributions, the fixed values) of `key=value` overrides."""
    searched, fixed = {}, {}
    for o in OverridesParser.create().parse_overrides(params):  # a later entry of a key wins (the command line)
        key = o.get_key_element()
        searched.pop(key, None)
        fixed.pop(key, None)
        if o.is_sweep_override():
            searched[key] = distribution(o)
        else:
            fixed[key] = o.get_value_element_as_str()
    return searched, fixed


def distribution(o) -> BaseDistribution:
    """One sweep override as an Optuna distribution (hydra-optuna-sweeper's reading); a space
    that cannot be sampled is a SearchError naming the key, what it holds and why."""
    _, _, written = o.input_line.partition("=")
    where = f"hydra.sweeper.params.{o.get_key_element()}={written!r}"
    value = o.value()
    try:
        if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
            return CategoricalDistribution(list(o.sweep_iterator(transformer=Transformer.encode)))
        if isinstance(value, RangeSweep):
            _ends(value.start, value.stop, step=value.step)
            if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
                return FloatDistribution(value.start, value.stop, step=value.step)
            return IntDistribution(int(value.start), int(value.stop), step=int(value.step))
        if isinstance(value, IntervalSweep):  # Hydra reads its ends as floats: always a float range
            _ends(value.start, value.end, log="log" in value.tags)
            return FloatDistribution(value.start, value.end, log="log" in value.tags)
    except (ValueError, OverflowError) as e:  # Optuna's own checks, for what _ends does not foresee
        raise SearchError(f"{where}: {e}") from None
    raise SearchError(f"hydra.sweeper.params: {o.input_line!r} is not a search space; "
                      "use interval(a, b), tag(log, interval(a, b)), choice(...) or range(a, b, step)")


def _ends(low, high, step=None, log: bool = False) -> None:
    """What Optuna can sample between: finite ends, low <= high, a step > 0, a log scale above 0."""
    if not all(math.isfinite(v) for v in (low, high, 1 if step is None else step)):
        raise ValueError("its ends must be finite numbers" + ("" if step is None else ", and its step too"))
    if low > high:
        raise ValueError(f"its low end {low:g} is above its high end {high:g}; write the low end first")
    if step is not None and not step > 0:
        raise ValueError(f"its step must be > 0 (got {step:g})")
    if log and not low > 0:
        raise ValueError(f"a log scale needs a low end > 0 (got {low:g}); e.g. tag(log, interval(1e-4, 1))")


def grid_values(name: str, d: BaseDistribution) -> list:
    """Every value of a discrete distribution, for the grid sampler."""
    if isinstance(d, CategoricalDistribution):
        return list(d.choices)
    if d.step is not None and not d.log:
        n = int(round((d.high - d.low) / d.step)) + 1
        return [d.low + i * d.step for i in range(n)]
    raise SearchError(f"hydra.sweeper.params.{name}: the grid sampler needs a finite set of values; "
                      "use choice(...) or range(a, b, step)")


# --------------------------------------------------------------------- sampler, pruner
def build(kind: str, table: dict, settings: dict, **given):
    """The `settings.name` entry of `table`, made with the other settings (each checked by name)."""
    settings = {k: v for k, v in (settings or {}).items() if v is not None}  # None: the sampler's own default
    name = str(settings.pop("name", "none" if kind == "pruner" else "tpe"))
    if name not in table:
        raise SearchError(f"hydra.sweeper.{kind}.name={name!r} is not one of: {', '.join(table)}")
    cls = table[name]
    accepted = [p for p in inspect.signature(cls).parameters if p not in given]
    if not accepted:  # nothing to set (no pruning): the settings written for another are left unused
        settings = {}
    unknown = sorted(set(settings) - set(accepted))
    if unknown:
        raise SearchError(f"hydra.sweeper.{kind}.{unknown[0]}: the {name} {kind} takes "
                          f"{', '.join(accepted) or 'no settings'}")
    try:
        return cls(**given, **settings)
    except (TypeError, ValueError) as e:
        raise SearchError(f"hydra.sweeper.{kind} ({name}): {e}") from None


@dataclass
class Plan:
    """A search as its settings describe it, checked before anything runs."""

    searched: dict[str, BaseDistribution]
    fixed: dict[str, str]
    sampler: optuna.samplers.BaseSampler
    pruner: optuna.pruners.BasePruner
    n_trials: int
    n_jobs: int
    max_failure_rate: float
    reports: int
    sampler_settings: dict
    grid: dict

    @classmethod
    def of(cls, settings: dict, arguments: list[str]) -> "Plan":
        params = [f"{k}={v}" for k, v in (settings.get("params") or {}).items()] + list(arguments)
        searched, fixed = space(params)
        if not searched:
            raise SearchError("hydra.sweeper.params: nothing to search; give a key a search space, "
                              "e.g. 'optimizer.lr=tag(log, interval(1e-4, 1))' on the command line, "
                              "or under hydra.sweeper.params: in a sweep file")
        sampler_settings = dict(settings.get("sampler") or {})
        grid = {}
        if sampler_settings.get("name") == "grid":
            grid = {"search_space": {k: grid_values(k, d) for k, d in searched.items()}}
        direction = str(settings.get("direction", "minimize"))
        if direction != "minimize":  # the ranking, the report and the pruners all take lower as better
            raise SearchError(f"hydra.sweeper.direction={direction!r}: a search minimises gradlab's objective, a loss "
                              "(the final validation loss, else the final training loss); leave direction out")
        n_trials, n_jobs, reports = (int(settings.get(k, d)) for k, d in (("n_trials", 20), ("n_jobs", 1), ("reports", 50)))
        rate = float(settings.get("max_failure_rate", 0.0))
        if n_jobs > MAX_JOBS:
            raise SearchError(f"hydra.sweeper.n_jobs={n_jobs} asks more trials at once than a search can use: each batch "
                              f"is asked before any of it trains; at most {MAX_JOBS:,} (a dense map is a grid sweep: "
                              "gradlab -m key=a,b,c)")
        for key, v, ok in (("n_trials", n_trials, n_trials >= 1), ("n_jobs", n_jobs, n_jobs >= 1),
                           ("reports", reports, reports >= 1), ("max_failure_rate", rate, 0.0 <= rate <= 1.0)):
            if not ok:
                raise SearchError(f"hydra.sweeper.{key}={v} is out of range "
                                  f"({'between 0 and 1' if key == 'max_failure_rate' else 'at least 1'})")
        if grid:
            n_trials = min(n_trials, math.prod(len(v) for v in grid["search_space"].values()))
        return cls(searched, fixed, build("sampler", SAMPLERS, sampler_settings, **grid),
                   build("pruner", PRUNERS, settings.get("pruner") or {}), n_trials, n_jobs, rate, reports,
                   sampler_settings, grid)

    def sampler_after(self, trials: int) -> optuna.samplers.BaseSampler:
        """The sampler for a study that has `trials` already: its seed moved on by as many, or a
        resumed search would draw its first trials' values again."""
        seed = self.sampler_settings.get("seed")
        if seed is None or not trials:
            return self.sampler
        return build("sampler", SAMPLERS, {**self.sampler_settings, "seed": int(seed) + trials}, **self.grid)


    def probes(self) -> list[list[str]]:
        """The overrides of the jobs to check before anything runs: one at the low corner of the
        space, then each searched key's every other value (a choice's each, a range's high end),
        the other keys at their corners; so a choice(0.1, abc) is refused for its abc."""
        def values(d) -> list:
            return list(d.choices) if isinstance(d, CategoricalDistribution) else [d.low, d.high]

        corner = {k: values(d)[0] for k, d in self.searched.items()}
        jobs = [corner] + [{**corner, k: v} for k, d in self.searched.items() for v in values(d)[1:] if v != corner[k]]
        fixed = [f"{k}={v}" for k, v in self.fixed.items()]
        return [[*(f"{k}={v}" for k, v in job.items()), *fixed] for job in jobs]


# ------------------------------------------------------------------------------- study
def default_storage(mlflow_uri: str) -> str:
    """An Optuna journal beside the MLflow store's database (in the working directory for a server)."""
    from gradlab.tracking.store import sqlite_path

    db = sqlite_path(mlflow_uri)
    return str((db.parent if db is not None else Path.cwd()) / "optuna.journal")


def check_storage(where: str) -> None:
    """Refuse, before the sweep's parent run exists, a storage Optuna cannot open: an RDB URL
    without its driver or its server, a journal whose file (or the lock beside it) cannot be
    written. Opens it as the search will, so a fresh one is made here."""
    import tempfile

    try:
        if "://" in where:
            optuna.storages.RDBStorage(where).remove_session()
        else:
            path = Path(where)
            if path.exists() and not path.is_file():
                raise OSError(f"{where} is not a file")
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab"):
                pass
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f"{path.name}.check-"):
                pass  # the journal's lock is a file made beside it
            mend_journal(path)
            _replay(path)
    except SearchError:
        raise
    except Exception as e:  # noqa: BLE001 - a driver, a server, a file system: said in one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SearchError(f"hydra.sweeper.storage={safe.uri(where)!r} cannot be opened: {safe.message(first)}; "
                          "leave it out for a journal beside the MLflow store, or give a writable file or an RDB URL "
                          "whose driver is installed") from None


def mend_journal(path: Path) -> None:
    """Cut a journal's last line where it is not a whole record: a process that died while
    appending tears it. Optuna skips such a line when it reads, but appends the next record onto
    it, and then no read gets past it. Done under the journal's own lock; the cut bytes are kept
    in a `.torn` file beside it."""
    from optuna.storages.journal import JournalFileSymlinkLock

    if _last_line_start(path) is None:
        return
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        start = _last_line_start(path)  # again, now that no search appends
        if start is None:
            return
        with open(path, "rb+") as f:
            f.seek(start)
            torn = f.read()
            f.truncate(start)
        with open(f"{path}.torn", "ab") as kept:
            kept.write(torn + (b"" if torn.endswith(b"\n") else b"\n"))
    finally:
        lock.release()
    print(f"gradlab: {safe.uri(str(path))} ended in a torn record ({len(torn)} bytes: a process died while writing "
          f"it); cut, and kept in {safe.uri(str(path))}.torn", flush=True)


def _last_line_start(path: Path, chunk: int = 1 << 16) -> int | None:
    """Where a journal's last line starts when that line is not a whole JSON record, else None."""
    with open(path, "rb") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return None
        tail, start = b"", end
        while start > 0:  # back to the newline before the last line (records are short)
            start = max(0, start - chunk)
            f.seek(start)
            tail = f.read(end - start)
            cut = tail.rfind(b"\n", 0, len(tail) - 1)
            if cut >= 0:
                start, tail = start + cut + 1, tail[cut + 1:]
                break
    if tail.endswith(b"\n"):
        try:
            json.loads(tail)
            return None
        except ValueError:  # JSONDecodeError and UnicodeDecodeError both
            pass
    return start


def _replay(path: Path) -> None:
    """Read the journal as Optuna will; a damaged record inside it is one line with the fix."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    try:
        JournalStorage(JournalFileBackend(str(path)))
    except (ValueError, KeyError, AssertionError) as e:
        raise SearchError(f"hydra.sweeper.storage: the Optuna journal {safe.uri(str(path))} has a damaged record "
                          f"({safe.message(str(e) or type(e).__name__)}); move it aside (a search then starts a new one) "
                          "or name another: hydra.sweeper.storage=FILE") from None


def open_storage(where: str):
    """An RDB URL (sqlite:///…, postgresql://…) as Optuna reads it; anything else is a journal file."""
    if "://" in where:
        return where
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    Path(where).parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(where))


def owner() -> str:
    """This process, as a trial's OWNER attr reads it."""
    from gradlab.tracking.processes import process_start

    return f"{socket.gethostname()}:{os.getpid()}:{process_start(os.getpid())}"


def _another_live_search(trial) -> bool:
    """The trial is running under another search that lives (on this machine: elsewhere a
    process cannot be told alive, and a search resumed there asks its trials again)."""
    from gradlab.tracking.processes import alive_here

    host, _, rest = str(trial.user_attrs.get(OWNER, "")).partition(":")
    pid, _, start = rest.partition(":")
    return pid != str(os.getpid()) and alive_here(host, pid, start) is True


def running_elsewhere(study: optuna.Study) -> int:
    """Trials another live search on this study is running now."""
    return sum(_another_live_search(t) for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


def recover(study: optuna.Study) -> int:
    """Ask again, once each, the trials that a signal stopped and those a dead process left
    running (another live search's are left to it); returns how many."""
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if not _another_live_search(t):
            _told(study, t.number, state=TrialState.FAIL)
    requeued = set(study.user_attrs.get(REQUEUED, []))
    again = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
             if not t.user_attrs.get(FAILED) and t.number not in requeued]
    for t in again:
        study.enqueue_trial(t.params, skip_if_exists=False)
    if again:
        study.set_user_attr(REQUEUED, sorted(requeued | {t.number for t in again}))
    return len(again)


def finished(study: optuna.Study) -> list:
    """The trials that count towards n_trials: complete, pruned, or failed by their job."""
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))
            if t.state != TrialState.FAIL or t.user_attrs.get(FAILED)]


# ------------------------------------------------------------------------------ trials
class Watch:
    """A run's objective reported to its trial about every `stride` epochs; True once pruned."""

    def __init__(self, trial: optuna.Trial, stride: int):
        self.trial, self.stride, self.due = trial, stride, 0
        self.pruned_at: int | None = None

    def __call__(self, epoch: int, value: float) -> bool:
        if epoch < self.due or not math.isfinite(value):
            return False
        self.due = epoch + self.stride
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            self.pruned_at = epoch
            return True
        return False


def _value(ret) -> float | None:
    """A job's result as the trial's value (+inf if it diverged); None if the job failed."""
    from hydra.core.utils import JobStatus

    if ret.status != JobStatus.COMPLETED:
        return None
    value = float(ret.return_value)
    return None if math.isnan(value) else value


def _line(number: int, overrides: list[str], outcome: str) -> str:
    return f"  trial {number}: {' '.join(overrides)} -> {outcome}"


def run(config, launcher, settings: dict, arguments: list[str], default_name: str, offered: Trials) -> dict[str, str]:
    """The search: ask a batch of trials, offer them to their jobs (`offered`: the sweep's, which
    the launcher claims them from), launch them, tell their results, until n_trials are done;
    returns the study's summary, as tags for the sweep's parent run."""
    from gradlab.tracking import tracking_uri

    plan = Plan.of(settings, arguments)
    storage = settings.get("storage") or default_storage(tracking_uri())
    name = settings.get("study_name") or default_name
    study = optuna.create_study(storage=open_storage(storage), study_name=name, sampler=plan.sampler,
                                pruner=plan.pruner, direction="minimize", load_if_exists=True)
    if study.direction != optuna.study.StudyDirection.MINIMIZE:  # loaded as stored: made to maximise, before
        raise SearchError(f"the study {name!r} in {safe.uri(storage)} maximises, and gradlab's objective is a loss; "
                          "name a new one: hydra.sweeper.study_name=...")
    study.sampler = plan.sampler_after(len(study.trials))
    again = recover(study)
    done = len(finished(study))
    to_go = max(0, plan.n_trials - done - running_elsewhere(study))
    print(f"gradlab: search {name!r} ({type(plan.sampler).__name__}, {type(plan.pruner).__name__}) in {safe.uri(storage)}: "
          f"{to_go} trials to run of {plan.n_trials}, {plan.n_jobs} at a time"
          + (f"; {done} already done" if done else "") + (f", {again} interrupted ones again" if again else ""), flush=True)
    stride = max(1, int(config.train.epochs) // plan.reports)
    job, me = 0, owner()
    while to_go > 0:
        batch = []
        try:
            for _ in range(min(plan.n_jobs, to_go)):
                batch.append(study.ask(plan.searched))
                batch[-1].set_user_attr(OWNER, me)
            overrides = [[*(f"{k}={override_value(v)}" for k, v in t.params.items()),
                          *(f"{k}={v}" for k, v in plan.fixed.items())] for t in batch]
            watches = [Watch(t, stride) for t in batch]
            for t, o, w in zip(batch, overrides, watches):
                offered.offer(o, Claim({"gradlab.trial": str(t.number), "gradlab.study": name}, w))
            returns = launcher.launch(overrides, initial_job_idx=job)
        except BaseException:  # a signal: these trials run again when the sweep is resumed
            for t in batch:
                _told(study, t, state=TrialState.FAIL)
            raise
        finally:
            offered.withdraw()
        job += len(batch)
        _tell(study, batch, overrides, watches, returns)
        # another search on this study counts too: together they run n_trials, not each
        to_go = plan.n_trials - len(finished(study)) - running_elsewhere(study)
        stop = _too_many_failures(study, plan.max_failure_rate)
        if stop:
            print(f"gradlab: error: {stop}", file=sys.stderr)
            return {**summary(study, name, storage, list(plan.searched)), "gradlab.error.message": stop}
    return summary(study, name, storage, list(plan.searched))


def override_value(value) -> str:
    """A sampled value as Hydra reads it back: a string that would parse as something else
    (a space, a comma, a quote, `1`, `true`) quoted, with its quotes escaped."""
    if not isinstance(value, str):
        return str(value)
    try:
        parsed = OverridesParser.create().parse_override(f"k={value}")
        if not parsed.is_sweep_override() and parsed.value() == value:
            return value
    except Exception:  # noqa: BLE001 - Hydra's grammar refused it: quoted below
        pass
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _tell(study, batch, overrides, watches, returns) -> None:
    for t, o, w, ret in zip(batch, overrides, watches, returns):
        if w.pruned_at is not None:
            _told(study, t, state=TrialState.PRUNED)
            print(_line(t.number, o, f"pruned at epoch {w.pruned_at}"), flush=True)
            continue
        value = _value(ret)
        if value is None:
            t.set_user_attr(FAILED, True)
        _told(study, t, value, state=TrialState.COMPLETE if value is not None else TrialState.FAIL)
        print(_line(t.number, o, "failed" if value is None else f"{value:.6g}"), flush=True)


def _told(study, trial, value=None, state=TrialState.COMPLETE) -> None:
    """study.tell; the grid sampler's request to stop once every cell is asked (an error outside
    Study.optimize, after the result is stored) is met anyway: n_trials is capped at the grid."""
    try:
        study.tell(trial, value, state=state)
    except RuntimeError as e:
        if "Study.stop" not in str(e):
            raise


def _too_many_failures(study, rate: float) -> str | None:
    """Why the search stops, once more of its trials so far failed than it tolerates."""
    done = finished(study)
    failed = sum(t.state == TrialState.FAIL for t in done)
    if done and failed / len(done) > rate:
        return (f"the search stopped: {failed} of {len(done)} trials failed, more than "
                f"hydra.sweeper.max_failure_rate={rate:g}; their errors are above")
    return None


def summary(study, name: str, storage: str, study_params: list[str]) -> dict[str, str]:
    """Where the study is, its trials' fates, its best trial."""
    states = [t.state for t in finished(study)]
    tags = {"gradlab.study": name, "gradlab.study.storage": safe.uri(storage),  # no password in a shared store
            "gradlab.study.params": " ".join(study_params),
            **{f"gradlab.study.{s.name.lower()}": str(states.count(s)) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}}
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if math.isfinite(t.value)]
    if complete:
        best = min(complete, key=lambda t: t.value)
        tags.update({"gradlab.study.best_trial": str(best.number), "gradlab.study.best_value": repr(best.value),
                     "gradlab.study.best_params": " ".join(f"{k}={v}" for k, v in best.params.items())})
        print(f"gradlab: search {name!r}: best trial {best.number}: {tags['gradlab.study.best_params']} -> {best.value:.6g}")
    return tags


def importances(name: str, storage: str) -> dict[str, float]:
    """Each searched parameter's importance (Optuna's default evaluator, PED-ANOVA); empty when
    the study is gone or has too few distinct results to tell the parameters apart. Asked by the
    report: importing optuna.importance costs a second (it loads scikit-learn). Reads only: a
    journal that is not there is not made."""
    if "://" not in storage and not Path(storage).is_file():
        return {}
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(storage))
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if math.isfinite(t.value)]
        return optuna.importance.get_param_importances(study) if len(complete) >= 2 else {}
    except (KeyError, ValueError, RuntimeError, OSError):
        return {}
