"""Hydra multiruns in MLflow: one parent run per sweep, every job a nested child run.

`SweepCallback` (registered under `hydra.callbacks` in conf/config.yaml) runs in the launching
process before any job starts:
1. with Hydra's basic sweeper, it expands the whole grid and checks every job's config
   (composition, types, ranges, data files, devices): one bad value stops the sweep before any
   job has run;
2. it opens the store once (creating it under its lock) and the parent run;
3. it tells the jobs which parent, sweep and experiment they belong to through environment
   variables, which every launcher passes on to its worker processes.

Hydra skips `on_multirun_end` when a job failed, so the end of a sweep is recorded by `finish`,
which the CLI calls whatever happened.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from gradlab import ranking
from gradlab.tracking.spec import RunEnd, RunSpec

PARENT_ENV = "GRADLAB_PARENT_RUN_ID"
SWEEP_ENV = "GRADLAB_SWEEP"
EXPERIMENT_ENV = "GRADLAB_SWEEP_EXPERIMENT"
LAUNCHER_ENV = "GRADLAB_SWEEP_LAUNCHER"  # the pid of the process that launched the sweep's jobs
VARIES_ENV = "GRADLAB_SWEEP_VARIES"  # the keys the sweep varies, comma-separated: they lead its children's names
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
OPTUNA_SWEEPER = "hydra_plugins.gradlab_optuna.optuna_sweeper.OptunaSweeper"

# What joblib's loky raises when a worker process dies (SIGKILL, out of memory): the pool stops.
WORKER_DIED = ("TerminatedWorkerError", "BrokenProcessPool")

_parent: dict = {}  # the sweep this process launched: recorder, key, id, name, experiment, jobs
last: dict = {}  # the last sweep this process finished: its parent run's id and experiment


def parent_run_id() -> str | None:
    return os.environ.get(PARENT_ENV) or None


def sweep_name() -> str | None:
    return os.environ.get(SWEEP_ENV) or None


def sweep_experiment() -> str | None:
    return os.environ.get(EXPERIMENT_ENV) or None


def launcher_pid() -> int | None:
    """The process that launched the running sweep's jobs (a job in another process is a worker's)."""
    value = os.environ.get(LAUNCHER_ENV, "")
    return int(value) if value.isdigit() else None


def sweep_varies() -> list[str] | None:
    """The keys the running sweep varies, or None outside a sweep."""
    value = os.environ.get(VARIES_ENV)
    return None if value is None else [k for k in value.split(",") if k]


def varied_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies (a grid's lists, a search's distributions), in the order it names
    them; a later plain value of a key (the command line) fixes it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    keys: dict[str, None] = {}
    for o in OverridesParser.create().parse_overrides(_params(config)):
        if o.is_sweep_override():
            keys.setdefault(o.key_or_group, None)  # where the sweep first names it
        else:
            keys.pop(o.key_or_group, None)
    return list(keys)


def _params(config: DictConfig) -> list[str]:
    """The sweep as Hydra's basic sweeper sees it: hydra.sweeper.params, then the command line."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    return params + list(config.hydra.overrides.task)


def annotate(tags: dict[str, str]) -> None:
    """Tags for the parent run of the sweep this process launched, written with its end (a
    search's study and best trial); a `gradlab.error.message` among them fails the sweep."""
    if _parent:
        _parent.setdefault("tags", {}).update(tags)


def grid(config: DictConfig) -> list[list[str]] | None:
    """Every job's overrides, or None when the sweeper chooses them as it goes (Optuna)."""
    if config.hydra.sweeper.get("_target_") != BASIC_SWEEPER:
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(_params(config))
    return [list(job) for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


def keep_compositions(loader) -> None:
    """Make composing a grid's jobs cheap, for this multirun. Hydra's sweeper composes every job of
    a batch to validate it, the grid check composes it again and a launcher once more, and each
    composition costs about 80 ms. Jobs differ mostly in values, not in config-group choices, so:
    each job's config is composed once and kept, and a job is composed as the config of its group
    choices alone (composed once for all jobs that share them) with its value overrides applied
    by Hydra's own function, as Hydra applies them after composing. Where that raises (a bad value)
    Hydra composes the job itself, with its own message. Callers only read what they get (the
    basic launcher sets the job's id on it before running it, once)."""
    compose = loader.load_sweep_config
    if getattr(compose, "keeps", False):
        return
    from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser, kept = OverridesParser.create(), {}

    def by_values(master_config, sweep_overrides: list[str]):
        parsed = parser.parse_overrides(list(sweep_overrides))
        values = [o for o in parsed if not o.is_hydra_override() and not loader.repository.group_exists(o.key_or_group)]
        choices = [o.input_line for o in parsed if o not in values]
        base_key = (id(master_config), "choices", tuple(choices))
        if base_key not in kept:
            kept[base_key] = compose(master_config, choices)
        cfg = copy.deepcopy(kept[base_key])
        ConfigLoaderImpl._apply_overrides_to_config(values, cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        names = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = get_overrides_dirname(overrides=task, kv_sep=names.kv_sep,
                                                               item_sep=names.item_sep, exclude_keys=names.exclude_keys)
        return cfg

    def load_sweep_config(master_config, sweep_overrides):
        key = (id(master_config), tuple(sweep_overrides))
        if key not in kept:
            try:
                kept[key] = by_values(master_config, sweep_overrides)
            except Exception:  # noqa: BLE001 - Hydra composes it, and says what is wrong in its words
                kept[key] = compose(master_config, sweep_overrides)
        return kept[key]

    load_sweep_config.keeps = True
    load_sweep_config.forget = kept.clear
    loader.load_sweep_config = load_sweep_config


def forget_compositions(loader) -> None:
    """Let the kept compositions go (a launcher that has its jobs' typed configs needs no more)."""
    forget = getattr(loader.load_sweep_config, "forget", None)
    if forget is not None:
        forget()


def check(config: DictConfig, jobs: list[list[str]]) -> list[tuple[list[str], str]]:
    """(overrides, message) for each job whose config cannot run; builds nothing that lasts."""
    from hydra.core.global_hydra import GlobalHydra

    from gradlab import training
    from gradlab.config import validate, to_typed

    loader = GlobalHydra.instance().config_loader()
    keep_compositions(loader)
    bad = []
    for job in jobs:
        try:
            cfg = loader.load_sweep_config(config, job).copy()
            with open_dict(cfg):
                del cfg["hydra"]
            typed = to_typed(cfg)
            validate(typed)
            training.setup(typed)
        except Exception as e:  # Hydra's composition errors, ConfigError, DataError alike
            bad.append((job, str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__))
    return bad


def sweep_hash(config: DictConfig) -> str:
    params = sorted(p for p in _params(config) if not p.startswith("tracking.skip_finished"))
    return hashlib.sha256(json.dumps([config.hydra.job.config_name, params]).encode()).hexdigest()[:16]


def _refuse_bad_jobs(config: DictConfig, name: str, jobs: list[list[str]] | None) -> None:
    """Exits 2 listing the grid's jobs (or the search's corners) that do not check out."""
    if config.hydra.sweeper.get("_target_") == OPTUNA_SWEEPER:
        _refuse_bad_search(config)
    bad = check(config, jobs) if jobs is not None else []
    if bad:
        print(f"gradlab: error: sweep {name!r}: {len(bad)} of {len(jobs)} jobs have bad values; "
              "nothing was run:", file=sys.stderr)
        for overrides, message in bad:
            print(f"  [{' '.join(overrides)}]: {message}", file=sys.stderr)
        sys.exit(2)


def _settle(recorder) -> None:
    """Wait for what the recorder was sent (the store it is making): nothing of gradlab's goes on
    in the background once this process has exited."""
    from gradlab.tracking import TrackingError

    try:
        recorder.sync()
    except TrackingError:
        pass  # the sweep is refused for its own reasons; the store's come up at the next run


def _refuse_bad_search(config: DictConfig) -> None:
    """A search whose settings cannot work stops before its parent run exists."""
    from gradlab.search import Plan, SearchError

    try:
        plan = Plan.of(OmegaConf.to_container(config.hydra.sweeper, resolve=True), list(config.hydra.overrides.task))
    except SearchError as e:
        print(f"gradlab: error: {e}", file=sys.stderr)
        sys.exit(2)
    bad = check(config, [plan.probe()])
    if bad:
        overrides, message = bad[0]
        print(f"gradlab: error: search {config.hydra.job.config_name!r}: a trial [{' '.join(overrides)}] cannot run: "
              f"{message}; nothing was run", file=sys.stderr)
        sys.exit(2)


def _parent_spec(config: DictConfig, name: str, experiment: str, jobs: list | None, shash: str, varied: list[str]) -> RunSpec:
    from gradlab.describe import provenance

    sweep_yaml = OmegaConf.to_yaml(OmegaConf.create({"sweeper": OmegaConf.to_container(config.hydra.sweeper),
                                                      "overrides": list(config.hydra.overrides.task)}))
    params = {"sweep.params": json.dumps(_params(config)), "sweep.jobs": str(len(jobs)) if jobs else "unknown",
              "sweep.launcher": str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1],
              "sweep.sweeper": str(config.hydra.sweeper.get("_target_", "")).rsplit(".", 1)[-1]}
    tags = {**provenance(), "gradlab.sweep": name, "gradlab.role": "sweep", "gradlab.sweep_hash": shash,
            "gradlab.outcome": "running", "gradlab.varied": ",".join(varied)}
    files = {"sweep.yaml": sweep_yaml}
    if jobs is not None:
        files["jobs.txt"] = "\n".join(" ".join(j) for j in jobs) + "\n"
    # Two runs of one sweep file are told apart by their start: "lr_scale_optimizer 12-01 14:52:07"
    return RunSpec(experiment, f"{name} {time.strftime('%m-%d %H:%M:%S')}", params, tags, files=files)


def sweep_names(config: DictConfig) -> tuple[str, str]:
    """(the sweep's name, its experiment): a sweep file names both; an ad-hoc grid is named after
    its recipe, else "multirun"."""
    from gradlab.describe import experiment_name

    file = config.hydra.job.config_name
    sweep_file = None if file == "config" else file
    recipe = config.hydra.runtime.choices.get("experiment")
    return sweep_file or recipe or "multirun", experiment_name(config.tracking.experiment, recipe, sweep_file)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from gradlab.tracking import Recorder, TrackingError, tracking_uri

        name, experiment = sweep_names(config)
        # Started first, so that its imports overlap the grid check; gradlab's launcher records
        # with `recorders` processes, forked from this one.
        recorder = Recorder.shared(max(0, int(config.hydra.launcher.get("recorders", 1)) - 1)
                                   if str(config.hydra.launcher.get("_target_", "")).endswith("BatchedLauncher") else 0)
        jobs, varied = grid(config), varied_keys(config)
        what = f"{len(jobs)} jobs" if jobs is not None else f"a search of {config.hydra.sweeper.get('n_trials', '?')} trials"
        print(f"gradlab: sweep {name!r}: {what} varying {', '.join(varied) or 'nothing'}, into experiment "
              f"{experiment!r} at {tracking_uri()}; checking every job first", flush=True)
        try:
            recorder.open()  # not waited for: a fresh store is made while the grid is checked
        except TrackingError as e:
            print(f"gradlab: error: {e}", file=sys.stderr)
            sys.exit(2)
        try:
            _refuse_bad_jobs(config, name, jobs)
        except SystemExit:
            _settle(recorder)
            raise
        try:
            shash = sweep_hash(config)
            resumed = recorder.ask("latest_sweep", experiment, shash) if config.tracking.skip_finished else None
            if resumed is None:
                key = recorder.start([_parent_spec(config, name, experiment, jobs, shash, varied)])[0]
            else:
                key = recorder.reopen(resumed.id)
                print(f"gradlab: resuming sweep {name!r} in parent run {resumed.id}; jobs that have a result are skipped")
            parent_id = recorder.run_id(key)
        except TrackingError as e:
            print(f"gradlab: error: {e}", file=sys.stderr)
            sys.exit(2)
        # Each job should leave a child run, unless it is skipped for a finished twin elsewhere.
        expected = len(jobs) if jobs and not config.tracking.skip_finished else None
        _parent.update(recorder=recorder, key=key, id=parent_id, name=name, experiment=experiment, jobs=expected,
                       varied=varied, search=config.hydra.sweeper.get("_target_") == OPTUNA_SWEEPER)
        os.environ.update({PARENT_ENV: parent_id, SWEEP_ENV: name, EXPERIMENT_ENV: experiment, VARIES_ENV: ",".join(varied),
                           LAUNCHER_ENV: str(os.getpid())})


def _close() -> dict:
    """The sweep this process launched, forgotten by the process and its future jobs."""
    parent = dict(_parent)
    _parent.clear()
    for key in (PARENT_ENV, SWEEP_ENV, EXPERIMENT_ENV, VARIES_ENV, LAUNCHER_ENV):
        os.environ.pop(key, None)
    return parent


def finish() -> int:
    """Record the end of the sweep this process launched (if any); returns the failed-job count."""
    if not _parent:
        return 0
    parent = _close()
    last.update(id=parent["id"], experiment=parent["experiment"])
    recorder, name, expected = parent["recorder"], parent["name"], parent["jobs"]
    latest = {}  # a resumed sweep holds a config twice (an old FAILED try, its re-run): the latest counts
    found, failures = _children(recorder, parent["id"], parent["key"])
    for c in found:
        latest[c.tag("config_hash", c.id)] = c
    for f in failures:
        print(f"gradlab: error: recording a run of sweep {name!r}: {f}", file=sys.stderr)
    if failures:  # the runs' statuses were set, but something of their record is missing: the sweep failed
        parent.setdefault("tags", {}).setdefault("gradlab.error.message", f"recording {len(failures)} run(s) failed: {failures[0]}")
    children = list(latest.values())
    by_outcome = {}
    for c in children:
        by_outcome.setdefault(c.outcome, []).append(c)
    killed = by_outcome.get("killed", [])
    failed = by_outcome.get("failed", []) + killed + by_outcome.get("running", [])
    # A job that failed before its run existed (its store broke, say) has no child to count.
    missing = max(0, expected - len(children)) if expected else 0
    counts = {"jobs": len(children), "finished": sum(len(by_outcome.get(k, [])) for k in ranking.RESULT),
              "diverged": len(by_outcome.get("diverged", [])), "pruned": len(by_outcome.get("pruned", [])),
              "failed": len(failed) + missing}
    # Bookkeeping as tags, not metrics: the UI charts every metric of the experiment beside the children's.
    tags = {**parent.get("tags", {}), **{f"gradlab.jobs_{k}" if k != "jobs" else "gradlab.jobs": str(v) for k, v in counts.items()}}
    answer = _answer(parent, children)
    tags.update(answer.tags)
    stopped = tags.get("gradlab.error.message")  # the sweeper gave up (a search with too many failures)
    _end(recorder, parent["key"], RunEnd("failed" if failed or missing or stopped else "completed", {}, tags,
                                         files=answer.files, plot_data=answer.plot_data))
    pruned = f"{counts['pruned']} pruned, " if counts["pruned"] else ""
    stops = f"{len(failed) - len(killed)} failed" + (f", {len(killed)} killed" if killed else "")
    print(f"gradlab: sweep {name!r}: {len(children)} jobs: {counts['finished']} finished, "
          f"{counts['diverged']} diverged, {pruned}{stops}  (parent run {parent['id']})")
    if missing:
        worker_died = tags.get("gradlab.error.type") in WORKER_DIED
        print(f"  {missing} job(s) never started: a worker died ({tags['gradlab.error.type']})" if worker_died else
              f"  {missing} job(s) ended before their run existed; their errors are above")
    for c in failed:
        print(f"  {c.outcome.upper()} [{c.tag('overrides')}]: {_why(c)}".rstrip())
    if children:
        print(f"  compare them: make compare EXPERIMENT={parent['experiment']}")
    return len(failed) + missing + bool(stopped)


def _children(recorder, parent_id: str, parent_key: int) -> tuple[list, list[str]]:
    """The sweep's child runs once every record sent is written, and what the recorders said
    failed in them. Every job is over by now, so a run a dead recorder of this process still
    holds RUNNING is ended here. Read from the store if the parent's recorder died."""
    from gradlab.tracking import Recorder, RecorderGone, Store, TrackingError, query

    failures = [f for rec in Recorder.everyone() for f in rec.failures()]
    try:
        Recorder.sync_all()
    except RecorderGone:
        pass
    except TrackingError as e:  # said while the last records were written
        failures.append(str(e))
    Recorder.end_orphans(spare=(recorder, parent_key))  # the parent's end is the sweep's, written next
    try:
        return recorder.ask("children", parent_id), failures
    except RecorderGone:
        return query.children(Store(recorder.uri), parent_id), failures


def _end(recorder, key: int, end: RunEnd) -> None:
    """The parent's end, written from this process if its recorder died (kill -9) or answered an
    earlier write's failure instead (the end may not have been sent: written here if still RUNNING)."""
    from gradlab.tracking import RecorderGone, TrackingError

    try:
        recorder.finish([key], [end])
        recorder.sync()
    except RecorderGone:
        recorder.finish_here([key], [end])
    except TrackingError as e:
        print(f"gradlab: error: {e}", file=sys.stderr)
        try:
            recorder.finish_here([key], [end])
        except TrackingError as again:  # the store refuses it too (full, read-only): `make reap` closes it
            print(f"gradlab: error: the sweep's parent run could not be ended: {again}", file=sys.stderr)


def _why(run) -> str:
    """What ended a run that did not finish."""
    if run.outcome == "killed":
        return run.tag("reason") or (f"stopped by {run.tag('signal')}" if run.tag("signal") else "")
    return f"{run.tag('error.type')} {run.tag('error.message')}"


@dataclass
class Answer:
    """What a sweep found, for its parent run: tags (its best runs, its description), the whole
    ranking as a file, and the data of the map and ranking page the recorder draws."""

    tags: dict[str, str]
    files: dict[str, str]
    plot_data: dict | None


def _answer(parent: dict, children: list) -> Answer:
    """The sweep's ranking (gradlab.ranking, the one source of "best"), said on its parent."""
    from gradlab import convergence, ranking

    entries = [ranking.entry(c.id, c.name, c.outcome, c.params, c.metrics, parent.get("varied"), c.tag("overrides"))
               for c in children]
    if not entries:
        return Answer({}, {}, None)
    best = ranking.best(entries)
    tags = {}
    if len({e.problem for e in entries}) == 1 and best:  # one problem: its best run; several: one each, never across
        (run,) = best.values()
        tags.update({"gradlab.best_run": run.run_id, "gradlab.best_overrides": _overrides(children, run.run_id),
                     "gradlab.best_objective": repr(run.score), "gradlab.best_verdict": run.verdict or ""})
    elif best:  # JSON: MLflow's tag keys cannot hold a problem's name
        tags["gradlab.best_runs"] = json.dumps({p: r.run_id for p, r in best.items()})
    comparisons = ranking.significance(entries) if ranking.replicated(entries) else []
    search = parent.get("search", False)
    cells = None if search else convergence.cells(entries)
    map_link = f"get-artifact?path=convergence_map.png&run_uuid={parent['id']}" if cells else None
    tags["mlflow.note.content"] = ranking.note(parent["name"], parent.get("varied", []), len(children), entries,
                                               comparisons, map_link)
    rows = ranking.rows(entries)
    summary = ranking.describe_objective(entries) + "".join(" " + c.sentence(len(comparisons)) for c in comparisons)
    return Answer(tags, {"ranking.csv": ranking.csv_text(rows)},
                  {"sweep": {"map": cells, "rows": rows, "title": f"Sweep {parent['name']}: the ranking", "summary": summary}})


def _overrides(children: list, run_id: str) -> str:
    return next((c.tag("overrides") for c in children if c.id == run_id), "")


def abort(signum: int) -> None:
    """A signal stopped the sweep this process launched: its parent run is KILLED."""
    if not _parent:
        return
    parent = _close()
    try:
        parent["recorder"].finish([parent["key"]], [RunEnd("killed", {}, {"gradlab.signal": str(signum)})])
        parent["recorder"].sync()
    except Exception:  # noqa: BLE001 - the store may be the reason we are going down; reap can close it
        pass
