"""A tracked run: validate → set up → describe → start → fit → evaluate → finish.

Whatever happens once its MLflow run exists, a run ends with a status that tells the truth
(`RunGroup` owns that end): completed/reached_stop_loss/pruned -> FINISHED, diverged -> FAILED (with step and
reason), an exception -> FAILED (with its type and message), SIGINT/SIGTERM -> KILLED. The
metrics logged so far and the history up to that point are kept in every case. User mistakes
raise before any run exists.
"""

from __future__ import annotations

import functools
import json
import signal
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from gradlab import describe, ranking, signals, timings
from gradlab.config import Config, Plots, config_hash, container, flatten, to_yaml, validate
from gradlab.progress import Progress
from gradlab.tracking import REGISTRY, MetricStream, Recorder, RecorderGone, RunEnd, RunSpec, masked


@dataclass(frozen=True)
class Origin:
    """Where runs come from: the experiment they go to and, for a sweep's children, the parent run,
    the sweep's name and the keys it varies (they lead the children's names)."""

    experiment: str
    parent_id: str | None = None
    sweep: str | None = None
    varied: list[str] | None = None
    jobs: int | None = None  # a sweep's size, where known: whether its children draw figures (tracking.plots=auto)


@dataclass
class Job:
    """One configuration to run, with what the record says about where it came from."""

    cfg: Config
    overrides: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    # A search's eye on the run: given each logged (epoch, objective), True stops it as pruned; its
    # pruned_at says where (set here too for a job skipped for a twin a pruner stopped).
    watch: Callable[[int, float], bool] | None = None


@dataclass
class Recorded:
    run_id: str | None  # None for a run of a sweep's batch that did not wait for its record
    outcome: str
    objective: float
    result: object  # training.Result, or None if skipped (an identical run already has a result)
    pruned_at: int | None = None  # a skipped job's twin was pruned by a search: at this epoch


def record(job: Job, origin: Origin, quiet: bool = False) -> Recorded:
    """Validate, build, then train and record one run; returns once its record is complete."""
    return record_group([job], origin, quiet=quiet)[0]


def record_group(jobs: list[Job], origin: Origin, quiet: bool = False, recorder=None, wait: bool = True) -> list[Recorded]:
    """Train jobs that differ only in values as one batch, each recorded as its own run; returns
    once every record is complete (`wait`), or once every end is sent (the caller syncs the
    recorder later: a sweep trains its next batch while this one is written). User mistakes
    raise before any run exists."""
    timings.stamp("record")
    for job in jobs:
        validate(job.cfg)
    recorder = recorder or REGISTRY.shared()
    recorder.open()  # checked here; the recorder imports mlflow and opens the store while torch loads
    # The experiment as recorded in config.yaml, so that a rerun finds it.
    logged = [replace(j.cfg, tracking=replace(j.cfg.tracking, experiment=origin.experiment)) for j in jobs]
    done = _finished(recorder, origin.experiment, logged) if jobs[0].cfg.tracking.skip_finished else {}
    todo = [i for i in range(len(jobs)) if i not in done]
    out = dict(done)
    if todo:
        out.update(zip(todo, _train(recorder, [jobs[i] for i in todo], [logged[i] for i in todo], origin, quiet, wait)))
    for i, rec in done.items():  # a search's trial of a pruned twin is pruned too, not a completed result
        if rec.pruned_at is not None and jobs[i].watch is not None:
            jobs[i].watch.pruned_at = rec.pruned_at
    if not quiet:
        for i, rec in done.items():
            print(f"gradlab: skipped {describe.run_name(jobs[i].cfg, jobs[i].overrides, origin.varied)}: "
                  f"run {rec.run_id} already {rec.outcome} with this config")
    return [out[i] for i in range(len(jobs))]


def _train(recorder, jobs: list[Job], logged: list[Config], origin: Origin, quiet: bool, wait: bool) -> list[Recorded]:
    from gradlab import training

    s = training.setup(*[j.cfg for j in jobs])  # ConfigError / DataError here leave no run behind
    timings.stamp("setup")
    specs = [describe_run(j, cfg, s, i, origin) for i, (j, cfg) in enumerate(zip(jobs, logged))]
    recorder.poll()  # a store the recorder could not open stops us before training
    histories = training.new_histories(s)
    first = jobs[0].cfg
    watches = [j.watch for j in jobs]
    # What a search's pruner watches: the loss its objective ranks by.
    watched = (ranking.rule(first.tracking.objective.value, {"optimal_train_loss": 0.0} if training.has_optimum(s) else {})
               if any(watches) else "train_loss")
    streaming = Streaming(first.tracking.max_points, first.train.progress, wait, watches, watched)
    with RunGroup(recorder, specs, histories, s.schedule, streaming) as group:
        with signals.polled() as check:  # a signal stops training between epochs: no history torn
            finals = training.fit(s, histories, group.on_log, check)
        timings.stamp("trained")
        results = training.evaluate(s, histories, finals, first.tracking.threshold)
        for i, (job, result) in enumerate(zip(jobs, results)):  # each end made as it is sent: memory stays flat
            t = job.cfg.tracking
            figures = draws_figures(t.plots, t.plots_max_children, origin)
            group.complete(i, functools.partial(_ending, s, i, job.cfg, result, figures))
    # Run ids come back as the recorder gets to them; a sweep that does not wait has no use for them.
    recorded = [Recorded(recorder.run_id(k) if wait else None, r.history.outcome,
                         ranking.score(r.history.outcome, r.metrics, j.cfg.tracking.objective.value, j.cfg.train.epochs), r)
                for k, r, j in zip(group.keys, results, jobs)]
    if not quiet:
        for spec, rec in zip(specs, recorded):
            print(summary(spec.name, rec.run_id, origin.experiment, recorder.uri, rec.result))
    return recorded


# The key that names a user's code -> its tags' and artifact folder's name.
CODE_NAMES = {"model.target": "target", "train.loss_target": "loss_target"}


def describe_run(job: Job, cfg: Config, s, i: int, origin: Origin) -> RunSpec:
    """The run to create for configuration i of a set-up batch; `cfg` is its config as logged."""
    flat = flatten(container(cfg))
    problem = s.problem
    n_val = 0 if problem.val is None else problem.val[1].shape[1]
    n_train = problem.n_train if problem.stream is None else (cfg.train.batch_size or 1) * cfg.train.epochs
    params = {**flat, "n_train": str(n_train), "n_val": str(n_val), "n_params": str(s.n_params)}
    tags = {**describe.provenance(), "gradlab.outcome": "running", "gradlab.config_hash": config_hash(flat),
            "gradlab.device": describe.device_name(s.backend.device), "gradlab.seed": str(cfg.train.seed),
            "gradlab.overrides": " ".join(job.overrides), **job.tags}
    if origin.sweep:
        tags["gradlab.sweep"] = origin.sweep
    prepared = s.prepared[i]
    if prepared is not None and prepared.dataset.sha256:
        tags.update({"gradlab.data.sha256": prepared.dataset.sha256, "gradlab.data.path": prepared.dataset.source})
    files = {"config.yaml": to_yaml(cfg), "overrides.txt": "\n".join(job.overrides) + "\n"}
    for key, target in s.code.items():  # a user's own code: what ran is kept with the run
        if target.path is not None:
            name = CODE_NAMES[key]
            tags.update({f"gradlab.{name}.sha256": target.sha256, f"gradlab.{name}.path": target.path})
            files[f"{name}/{Path(target.path).name}"] = target.source
    inputs = describe.datasets(prepared, cfg.data.name, flat)
    return RunSpec(origin.experiment, describe.run_name(cfg, job.overrides, origin.varied), params, tags, origin.parent_id,
                   inputs, files)


def draws_figures(plots: Plots, max_children: int, origin: Origin) -> bool:
    """Whether a run draws its figures as it ends (tracking.plots). auto: a single run does, and
    every child of a sweep known to have at most max_children jobs; a larger sweep's best runs get
    theirs at its end (multirun/figures.py)."""
    if plots is Plots.auto:
        return origin.parent_id is None or (origin.jobs is not None and origin.jobs <= max_children)
    return plots is Plots.all


def _ending(s, i: int, cfg: Config, result, figures: bool) -> RunEnd:
    from gradlab import training

    return ending(result, training.plot_data(s, i, result, describe.title(cfg)) if figures else None,
                  cfg.tracking.objective.value, cfg.train.epochs)


def ending(result, plot_data: dict | None, objective: str, epochs: int) -> RunEnd:
    """The end of a run that trained to a result: completed, reached_stop_loss, diverged or
    pruned, with its verdict against the optimum and its place in the sweep's order."""
    h = result.history
    tags = {f"gradlab.{h.outcome}_step": str(h.stop_step), "gradlab.reason": h.reason} if h.stop_step is not None else {}
    files = {"params.json": json.dumps({"params": result.params, "optimum": result.optimum}, indent=2)}
    params, codes = ranking.fate(h.outcome, result.metrics, objective, epochs)
    return RunEnd(h.outcome, {**result.metrics, **codes}, tags, files, params=params, plot_data=plot_data,
                  points=final_parameters(result))


def final_parameters(result) -> list[tuple[str, float, int]]:
    """The tracked parameters after the last update, as the last point of their `param.*` series:
    a history row holds the parameters at the start of its epoch, so the state after epoch k is
    step k + 1 (what the runs table shows as a metric's value is its last point)."""
    tracked = [c for c in result.history.columns if c.startswith("param.")]
    values = [v for p in result.params.values() for v in _ravel(p)]
    return [(name, float(v), result.history.epochs_run + 1) for name, v in zip(tracked, values)]


def _ravel(value) -> list[float]:
    """A nested list's numbers in order (a parameter's elements)."""
    return [v for part in value for v in _ravel(part)] if isinstance(value, list) else [value]


def finished(recorder, jobs: list[Job], origin: Origin) -> dict[int, Recorded]:
    """The jobs (of any batches) whose identical config already has a result in the origin's
    experiment, by position: what `tracking.skip_finished` skips."""
    logged = [replace(j.cfg, tracking=replace(j.cfg.tracking, experiment=origin.experiment)) for j in jobs]
    return _finished(recorder, origin.experiment, logged)


def _finished(recorder: Recorder, experiment: str, logged: list[Config]) -> dict[int, Recorded]:
    """The jobs whose identical config already has a result in `experiment`, by position."""
    hashes = [config_hash(flatten(container(cfg))) for cfg in logged]
    found = recorder.ask("finished", experiment, hashes)
    return {i: Recorded(r.id, r.outcome, ranking.score(r.outcome, r.metrics, cfg.tracking.objective.value, cfg.train.epochs),
                        None, int(r.metrics.get("epochs_run", 0)) if r.outcome == "pruned" else None)
            for i, (h, cfg) in enumerate(zip(hashes, logged)) if (r := found.get(h)) is not None}


@dataclass
class Streaming:
    """How a group of runs is followed while it trains: its step metrics (at most max_points
    each), the progress line, whether its end is waited for, a search's watches and the loss they see."""

    max_points: int
    progress: bool | None
    wait: bool = True
    watches: list = field(default_factory=list)
    watched: str = "val_loss"


class RunGroup:
    """Owns the ends of a group of started runs: whatever leaves the `with` block, every run
    without a result ends KILLED (a signal) or FAILED (an exception), with its history so far."""

    def __init__(self, recorder: Recorder, specs: list[RunSpec], histories: list, schedule, streaming: "Streaming"):
        self.recorder, self.histories, self.wait = recorder, histories, streaming.wait
        self.watches = {i: w for i, w in enumerate(streaming.watches) if w is not None}
        self.keys = recorder.start(specs)
        metrics = histories[0].metrics
        self.stream = MetricStream(recorder.log, self.keys, histories[0].columns, schedule.expected_rows(),
                                   streaming.max_points, check=recorder.poll)
        self.progress = Progress(schedule.epochs, metrics, streaming.progress)
        watched = streaming.watched
        self.ends: dict[int, Callable[[], RunEnd]] = {}  # run -> how to make its end (it trained to a result)
        # A search's pruner watches the validation loss where the objective is one, else the training loss.
        self.objective_at = metrics.index("val_loss" if watched in ("val_loss", "best_val_loss") and "val_loss" in metrics
                                          else "train_loss")

    def on_log(self, epoch: int, configs: list[int], rows: list) -> list[int]:
        """Streams the rows; returns the runs their watch stops (pruned)."""
        self.stream(epoch, configs, rows)
        self.progress(epoch, configs, rows)
        if not self.watches:
            return []
        return [c for c, row in zip(configs, rows) if c in self.watches and self.histories[c].outcome == "running"
                and self.watches[c](epoch, row[self.objective_at])]

    def complete(self, i: int, make_end: Callable[[], RunEnd]) -> None:
        self.ends[i] = make_end

    def __enter__(self) -> "RunGroup":
        return self

    def __exit__(self, kind, error, tb) -> None:
        self.progress.close()
        with signals.deferred():  # a second Ctrl-C here must not leave a run RUNNING
            try:
                self._send_ends(error)
            except Exception as e:
                if isinstance(e, RecorderGone) or isinstance(error, RecorderGone):  # this process writes the ends it left
                    self.recorder.finish_here(self.keys, [self._full_end(i, error or e) for i in range(len(self.keys))])
                if error is None:  # else the error that stopped the runs is the one to report
                    raise
        if isinstance(error, KeyboardInterrupt):  # Ctrl-C without gradlab's handler unwinds as Killed too
            raise signals.Killed(signal.SIGINT) from None

    def _send_ends(self, error: BaseException | None) -> None:
        self.stream.close()
        for i in range(len(self.keys)):  # a message a run: memory stays flat
            self.recorder.finish([self.keys[i]], [self._full_end(i, error)])
        timings.stamp("queued")
        if self.wait or error is not None:  # an interrupted sweep goes no further: its ends must be in
            self.recorder.sync()
        timings.stamp("recorded")

    def _full_end(self, i: int, error: BaseException | None) -> RunEnd:
        end = self._end(i, error)
        end.history = self.histories[i].table()
        return end

    def _end(self, i: int, error: BaseException | None) -> RunEnd:
        make = self.ends.get(i)  # kept: if the recorder dies, the end is made again, here
        if make is None:
            return self.stopped(i, error)
        try:
            return make()
        except Exception as e:  # noqa: BLE001 - this run's end could not be made: it failed, the others go on
            return self.stopped(i, e)

    def stopped(self, i: int, error: BaseException | None) -> RunEnd:
        """The end of a run that left without a result."""
        metrics = {"epochs_run": float(self.histories[i].epochs_run)}
        if isinstance(error, (signals.Killed, KeyboardInterrupt)):
            params, codes = ranking.fate("killed", metrics, "auto", 0)
            return RunEnd("killed", {**metrics, **codes}, {"gradlab.signal": signal.Signals(signals.signum_of(error)).name},
                          params=params)
        message = (str(error) or repr(error)) if error else "ended without a result"
        params, codes = ranking.fate("failed", metrics, "auto", 0)
        return RunEnd("failed", {**metrics, **codes}, {"gradlab.error.type": type(error).__name__ if error else "",
                                                       "gradlab.error.message": message}, params=params)


def summary(name: str, run_id: str, experiment: str, uri: str, result) -> str:
    h, m = result.history, result.metrics
    lines = [f"gradlab: {name}: {h.outcome} after {h.epochs_run} epochs in {h.seconds:.2f} s"
             + (f" ({h.reason})" if h.reason else "")]
    keys = ("final_train_loss", "final_val_loss", "best_val_loss", "optimal_train_loss", "excess_loss",
            "last_train_loss", "last_val_loss")
    lines.append("  " + "  ".join(f"{k} {m[k]:.6g}" for k in keys if k in m))
    shown = ", ".join(f"{k}={_short(v)}" for k, v in result.params.items())
    lines.append(f"  params {shown}" if len(shown) < 200 else f"  params: {len(result.params)} tensors (params.json)")
    lines.append(f"  run {run_id} in experiment {experiment!r} at {masked(uri)}")
    return "\n".join(lines)


def _short(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return f"{v:.5g}"
