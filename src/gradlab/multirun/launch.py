"""The batched launcher's work (hydra/launcher=batched): compose and check every job of the
sweep, group the jobs that can share one program, train each group as one batch, record every job
as its own complete run, and hand one result per job back to the sweeper (Optuna's batches of
n_jobs trials become batches too).

Jobs share a program when they differ only in values that can become a tensor axis: optimizer
hyperparameters, schedule values, input scaling, seeds, start values, the split seed (`BATCHED`).
Any other difference (model, dataset, gradient method, optimizer or schedule kind, epochs, batch
size, dtype, device) makes another group. L-BFGS runs a line search per configuration: its jobs
run one at a time.
A crash inside a batch fails each of its jobs (they were one program); the other batches go on.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

from gradlab.config import Config, container, flatten
from gradlab.record import Job, Origin, record_group
from gradlab.multirun.hydra_internals import forget_compositions, typed_job
from gradlab.tracking import RecorderGone

# Flattened config keys whose values become a tensor axis (a prefix ends with ".").
BATCHED = ("optimizer.", "schedule.", "data.scaling", "data.scale_factor", "data.split_seed", "data.seed", "train.seed",
           "train.stop_loss", "train.progress", "model.start", "model.start.", "model.init", "model.init_scale", "tracking.run_name",
           "tracking.plots", "tracking.skip_finished")
UNBATCHED = ("optimizer.name", "schedule.name")  # ...but not these
ONE_AT_A_TIME = {"lbfgs"}  # optimizers that cannot share a batch


def batch_key(cfg: Config, index: int) -> tuple:
    """Jobs with equal keys train as one batch."""
    flat = flatten(container(cfg))
    kept = tuple(sorted((k, v) for k, v in flat.items()
                        if k in UNBATCHED or not any(k == b or (b.endswith(".") and k.startswith(b)) for b in BATCHED)))
    return kept + ((("job", index),) if cfg.optimizer.name in ONE_AT_A_TIME else ())


def groups(jobs: list[Job], max_batch: int) -> list[list[int]]:
    """The jobs' positions, grouped into batches (in the order of their first job)."""
    by_key: dict[tuple, list[int]] = {}
    for i, job in enumerate(jobs):
        by_key.setdefault(batch_key(job.cfg, i), []).append(i)
    return [g[s:s + max_batch] for g in by_key.values() for s in range(0, len(g), max_batch)]


def _compose(hydra_context, config, overrides: list[str]) -> Config | Exception:
    """The job's typed config, or the error that stops it."""
    try:
        return typed_job(hydra_context.config_loader, config, overrides)
    except Exception as e:  # noqa: BLE001 - Hydra's composition errors and ConfigError alike: this job fails
        print(f"gradlab: job [{' '.join(overrides)}] cannot run: {str(e).strip().splitlines()[0]}", file=sys.stderr)
        return e


def _job_return(task_name: str, overrides, value, failed: bool):
    """What Hydra's sweepers read of a job: its overrides, status and return value. The composed
    configs are left out: a dense grid's would be the largest part of the sweep's memory."""
    from hydra.core.utils import JobReturn, JobStatus

    ret = JobReturn(overrides=list(overrides), working_dir=".", task_name=task_name)
    ret.status = JobStatus.FAILED if failed else JobStatus.COMPLETED
    ret.return_value = value
    return ret


@dataclass
class Prepared:
    """A launch's jobs composed, checked and grouped: what a launcher trains, here or elsewhere."""

    name: str  # Hydra's task name, for the JobReturns
    job_overrides: list
    jobs: list[Job]  # the jobs that compose
    where: list[int]  # each one's position among job_overrides
    results: dict[int, object]  # JobReturns known already (jobs that do not compose)
    batches: list[list[int]]  # positions in `jobs`
    origin: Origin

    def job_return(self, k: int, value, failed: bool):
        """The JobReturn of jobs[k]."""
        i = self.where[k]
        self.results[i] = _job_return(self.name, self.job_overrides[i], value, failed)

    def returns(self) -> list:
        return [self.results[i] for i in range(len(self.job_overrides))]


def prepare(hydra_context, config, job_overrides, sweep, max_batch: int, watches: bool = True) -> Prepared:
    """Compose and check every job of this launch and group them into batches; a search's trials
    are claimed (their tags, and their watches where `watches`: a pruner sees only runs trained
    in this process)."""
    from pathlib import Path

    Path(str(config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)  # Hydra's bookkeeping, as its launchers do
    composed = [_compose(hydra_context, config, list(o)) for o in job_overrides]
    forget_compositions(hydra_context.config_loader)
    name = config.hydra.job.name
    results: dict[int, object] = {}
    jobs, where = [], []
    for i, (typed, overrides) in enumerate(zip(composed, job_overrides)):
        if isinstance(typed, Exception):
            results[i] = _job_return(name, overrides, typed, failed=True)
        else:
            claim = sweep.trials.claim(overrides)  # a search's trial: tags for its run, a watch on its curve
            jobs.append(Job(typed, list(overrides), claim.tags if claim else {},
                            claim.watch if claim and watches else None))
            where.append(i)
    ctx = sweep.context
    origin = ctx.origin() if ctx else Origin(config.tracking.experiment or "default")
    return Prepared(name, list(job_overrides), jobs, where, results, groups(jobs, max_batch), origin)


def sizes(batches: list[list[int]]) -> str:
    return (f"{len(batches)} batch{'es' if len(batches) != 1 else ''} "
            f"(sizes {', '.join(str(len(b)) for b in batches)})")


def launch(hydra_context, config, job_overrides, sweep, n_recorders: int, max_batch: int) -> list:
    """Every job of this launch, grouped and trained batch by batch, recorded as children of
    `sweep` (a gradlab.multirun.Sweep: its context, its recorders, a search's trials); one JobReturn
    per job, in order."""
    p = prepare(hydra_context, config, job_overrides, sweep, max_batch)
    pool = sweep.recorders(n_recorders)
    print(f"gradlab: {len(p.jobs)} jobs in {sizes(p.batches)}, recorded into {p.origin.experiment!r} at {pool.open()}",
          flush=True)
    done = diverged = 0
    for batch in p.batches:
        group = [p.jobs[k] for k in batch]
        pool = sweep.recorders(n_recorders)  # a recorder that died (or was stopped and killed) is replaced
        try:
            recorded = record_group(group, p.origin, quiet=True, recorder=pool, wait=False)
            outcomes = [(rec.objective, False) for rec in recorded]
            diverged += sum(rec.outcome == "diverged" for rec in recorded)
        except Exception as e:  # noqa: BLE001 - user mistakes and crashes alike: the batch's jobs fail, others go on
            print(f"gradlab: a batch of {len(group)} failed: {type(e).__name__}: {e}", file=sys.stderr)
            outcomes = [(e, True)] * len(group)
        with contextlib.suppress(RecorderGone):  # every recorder dead: the sweep's end ends their runs
            pool.flush()  # the batch's ends out of this process before the next one trains (and may crash it)
        for k, (value, failed) in zip(batch, outcomes):
            p.job_return(k, value, failed)
        done += len(group)
        sweep.progress(done, len(p.jobs), diverged)
    # The results go back before every record is written: a search trains its next trials while
    # these are recorded; the sweep's end waits for them all (Sweep.finish).
    sweep.progress_end()
    return p.returns()
