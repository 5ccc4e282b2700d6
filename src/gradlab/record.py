"""A tracked run: validate → set up → describe → start → fit → evaluate → finish.

Whatever happens once its MLflow run exists, a run ends with a status that tells the truth
(`RunGroup` owns that end): completed/converged -> FINISHED, diverged -> FAILED (with step and
reason), an exception -> FAILED (with its type and message), SIGINT/SIGTERM -> KILLED. The
metrics logged so far and the history up to that point are kept in every case. User mistakes
raise before any run exists.
"""

from __future__ import annotations

import json
import signal
from dataclasses import dataclass, field, replace

from gradlab import describe, signals, timings
from gradlab.config import Config, config_hash, container, flatten, to_yaml, validate
from gradlab.progress import Progress
from gradlab.tracking import MetricStream, Recorder, RunEnd, RunSpec


@dataclass
class Job:
    """One configuration to run, with what the record says about where it came from."""

    cfg: Config
    overrides: list[str] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class Recorded:
    run_id: str
    outcome: str
    objective: float
    result: object  # run.Result, or None if skipped (an identical run already has a result)


def record(cfg: Config, *, experiment: str, overrides: list[str] | None = None, parent_run_id: str | None = None,
           sweep: str | None = None, extra_tags: dict | None = None, quiet: bool = False) -> Recorded:
    """Validate, build, then train and record one run; returns once its record is complete."""
    timings.stamp("record")
    validate(cfg)
    recorder = Recorder.shared()
    recorder.open()  # checked here; the recorder imports mlflow and opens the store while torch loads
    from gradlab import run

    job = Job(cfg, list(overrides or []), dict(extra_tags or {}))
    s = run.setup(cfg)  # ConfigError / DataError here leave no run behind
    timings.stamp("setup")
    spec, chash = describe_run(job, s, experiment, parent_run_id, sweep)
    if cfg.tracking.skip_finished and (done := _finished(recorder, experiment, chash)):
        if not quiet:
            print(f"gradlab: skipped {spec.name}: run {done.run_id} already {done.outcome} with this config")
        return done
    recorder.poll()  # a store the recorder could not open stops us before training
    history = run.new_history(s)
    with RunGroup(recorder, [spec], [history], s.schedule, cfg.tracking.max_points, cfg.train.progress) as group:
        run.fit(s, history, group.on_log)
        timings.stamp("trained")
        result = run.evaluate(s, history)
        group.complete(0, ending(cfg, result, run.plot_data(s, result, describe.title(cfg)) if cfg.tracking.plots else None))
    run_id = recorder.run_id(group.keys[0])
    if not quiet:
        print(summary(spec.name, run_id, experiment, recorder.uri, result))
    return Recorded(run_id, history.outcome, result.objective, result)


def describe_run(job: Job, s, experiment: str, parent_id: str | None, sweep: str | None) -> tuple[RunSpec, str]:
    """The run to create for a set-up job, and its config hash."""
    cfg = replace(job.cfg, tracking=replace(job.cfg.tracking, experiment=experiment))  # as logged: rerun finds it
    flat = flatten(container(cfg))
    chash = config_hash(flat)
    problem = s.problem
    n_val = 0 if problem.val is None else len(problem.val[1])
    n_train = problem.n_train if problem.stream is None else (cfg.train.batch_size or 1) * cfg.train.epochs
    params = {**flat, "n_train": str(n_train), "n_val": str(n_val), "n_params": str(s.n_params)}
    tags = {**describe.provenance(), "gradlab.outcome": "running", "gradlab.config_hash": chash,
            "gradlab.device": describe.device_name(s.backend.device), "gradlab.seed": str(cfg.train.seed),
            "gradlab.overrides": " ".join(job.overrides), **job.tags}
    if sweep:
        tags["gradlab.sweep"] = sweep
    if s.prepared is not None and s.prepared.dataset.sha256:
        tags.update({"gradlab.data.sha256": s.prepared.dataset.sha256, "gradlab.data.path": s.prepared.dataset.source})
    files = {"config.yaml": to_yaml(cfg), "overrides.txt": "\n".join(job.overrides) + "\n"}
    inputs = describe.datasets(s.prepared, cfg.data.name, flat)
    return RunSpec(experiment, describe.run_name(cfg), params, tags, parent_id, inputs, files), chash


def ending(cfg: Config, result, plot_data: dict | None) -> RunEnd:
    """The end of a run that trained to a result: completed, converged or diverged."""
    h = result.history
    tags = {"gradlab.diverged_step": str(h.stop_step), "gradlab.reason": h.reason} if h.outcome == "diverged" else {}
    files = {"params.json": json.dumps({"params": result.params, "optimum": result.optimum}, indent=2)}
    return RunEnd(h.outcome, result.metrics, tags, files, plot_data=plot_data)


def _finished(recorder: Recorder, experiment: str, chash: str) -> Recorded | None:
    from gradlab.run import objective

    done = recorder.ask("finished", experiment, [chash]).get(chash)
    return done and Recorded(done.id, done.outcome, objective(done.metrics, done.outcome), None)


class RunGroup:
    """Owns the ends of a group of started runs: whatever leaves the `with` block, every run
    without a result ends KILLED (a signal) or FAILED (an exception), with its history so far."""

    def __init__(self, recorder: Recorder, specs: list[RunSpec], histories: list, schedule, max_points: int,
                 progress: bool | None):
        self.recorder, self.histories = recorder, histories
        self.keys = recorder.start(specs)
        metrics = histories[0].metrics
        self.stream = MetricStream(recorder.log, self.keys, histories[0].columns, schedule.expected_rows(), max_points)
        self.progress = Progress(schedule.epochs, metrics, progress)
        self.ends: dict[int, RunEnd] = {}

    def on_log(self, epoch: int, configs: list[int], rows: list) -> None:
        self.stream(epoch, configs, rows)
        self.progress(epoch, configs, rows)

    def complete(self, i: int, end: RunEnd) -> None:
        self.ends[i] = end

    def __enter__(self) -> "RunGroup":
        return self

    def __exit__(self, kind, error, tb) -> None:
        self.progress.close()
        with signals.deferred():  # a second Ctrl-C here must not leave a run RUNNING
            try:
                self.stream.close()
                ends = [self.ends.get(i) or self.stopped(i, error) for i in range(len(self.keys))]
                for end, h in zip(ends, self.histories):
                    end.history = h.table()
                self.recorder.finish(self.keys, ends)
                timings.stamp("queued")
                self.recorder.sync()
                timings.stamp("recorded")
            except Exception:
                if error is None:  # else the error that stopped the runs is the one to report
                    raise
        if isinstance(error, KeyboardInterrupt):  # Ctrl-C without gradlab's handler unwinds as Killed too
            raise signals.Killed(signal.SIGINT) from None

    def stopped(self, i: int, error: BaseException | None) -> RunEnd:
        """The end of a run that left without a result."""
        metrics = {"epochs_run": float(self.histories[i].epochs_run)}
        if isinstance(error, (signals.Killed, KeyboardInterrupt)):
            return RunEnd("killed", metrics, {"gradlab.signal": signal.Signals(signals.signum_of(error)).name})
        message = (str(error) or repr(error)) if error else "ended without a result"
        return RunEnd("failed", metrics, {"gradlab.error.type": type(error).__name__ if error else "",
                                          "gradlab.error.message": message})


def summary(name: str, run_id: str, experiment: str, uri: str, result) -> str:
    h, m = result.history, result.metrics
    lines = [f"gradlab: {name}: {h.outcome} after {h.epochs_run} epochs in {h.seconds:.2f} s"
             + (f" ({h.reason})" if h.reason else "")]
    keys = ("final_train_loss", "final_val_loss", "best_val_loss", "optimal_train_loss", "excess_loss")
    lines.append("  " + "  ".join(f"{k} {m[k]:.6g}" for k in keys if k in m))
    shown = ", ".join(f"{k}={_short(v)}" for k, v in result.params.items())
    lines.append(f"  params {shown}" if len(shown) < 200 else f"  params: {len(result.params)} tensors (params.json)")
    lines.append(f"  run {run_id} in experiment {experiment!r} at {uri}")
    return "\n".join(lines)


def _short(v) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_short(x) for x in v) + "]"
    return f"{v:.5g}"
