"""Batches on a Slurm cluster (hydra/launcher=batched_slurm): the jobs composed, checked and
grouped as the batched launcher does (launch.prepare), the batches packed into at most `tasks`
array tasks of one Slurm job submitted through submitit, each task training its batches and
recording its children as the batched launcher would in this process; the launcher waits and
hands one result per job back to the sweeper (a search's batches of trials too).

A task gets what it needs of its sweep as data, pickled by submitit: its SweepContext (the parent
run, the store), its jobs' configs; nothing through the environment. Its runs are tagged
`gradlab.slurm.task` (e.g. 17_1), the sweep's parent `gradlab.slurm.jobs` and `gradlab.slurm.tasks`.

Waiting reads Slurm's own state (squeue, then scontrol for a task that left the queue) and the
tasks' result files: submitit's watcher asks sacct, which needs Slurm's accounting database.
A task stopped by Slurm (scancel, its time limit, preemption) gets SIGTERM: its runs in training
end KILLED with their metrics and history so far, its batches not started never start, and its
jobs' results say so; should it die harder (SIGKILL before its ends were written), the launcher
ends the runs it left RUNNING, KILLED, once every task is over.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
from collections import Counter
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace

from gradlab.multirun.context import VARIABLE, SweepContext
from gradlab.multirun.launch import Prepared, prepare, sizes

POLL_SECONDS = 0.5  # how often the launcher looks at the queue and the result files
QUEUE_PATIENCE = 120.0  # seconds squeue may fail in a row (a controller restarting) before the sweep gives up


@dataclass(frozen=True)
class SlurmSettings:
    """hydra.launcher's Slurm settings (submitit's names where it has them)."""

    tasks: int = 4
    partition: str | None = None
    timeout_min: int = 60
    cpus_per_task: int = 1
    mem_gb: float | None = None
    gres: str | None = None
    account: str | None = None
    qos: str | None = None
    additional_parameters: dict = field(default_factory=dict)
    array_parallelism: int = 256
    folder: str = "${hydra.sweep.dir}/.submitit/%j"


class SlurmError(RuntimeError):
    """What Slurm did to a sweep, said in one line."""


class TaskLost(SlurmError):
    """A Slurm task ended before its jobs had a result (scancel, its time limit, a crash)."""


class SlurmRefused(SlurmError):
    """sbatch refused the job (a partition, account or limit the cluster does not have)."""


# ------------------------------------------------------------------------------ the launcher
def launch(hydra_context, config, job_overrides, sweep, settings: SlurmSettings, n_recorders: int, max_batch: int) -> list:
    """Every job of this launch, trained in Slurm array tasks; one JobReturn per job, in order."""
    from gradlab.options import ConfigError

    if settings.tasks < 1:
        raise ConfigError("hydra.launcher.tasks", settings.tasks, "must be at least 1")
    p = prepare(hydra_context, config, job_overrides, sweep, max_batch, watches=False)
    _skip_finished(p, sweep)
    if not p.batches:
        return p.returns()
    tasks = pack(p, settings.tasks)
    ctx = sweep.context
    if ctx is None:  # the launcher used without gradlab's sweep around it: the children have no parent
        from gradlab.tracking import tracking_uri

        ctx = SweepContext("", p.origin.sweep or "", p.origin.experiment, tracking_uri())
    executor = _executor(settings, str(config.hydra.sweep.dir), config.hydra.job.name)
    payloads = [[[_portable(p.jobs[k]) for k in batch] for batch in task] for task in tasks]
    try:  # submitit prints sbatch's complaint before raising it: said once, below
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            submitted = [executor.submit(run_task, ctx, payload, n_recorders) for payload in payloads]
    except Exception as e:  # noqa: BLE001 - submitit's FailedJobError holds sbatch's own words
        raise SlurmRefused(_refusal(e)) from None
    ids = [j.job_id for j in submitted]
    array = ids[0].split("_")[0]
    print(f"gradlab: {_jobs(sum(map(len, p.batches)))} in {sizes(p.batches)}, packed into {len(tasks)} Slurm task"
          f"{'s' if len(tasks) != 1 else ''} of job {array} ({', '.join(f'{i}: {_jobs(n)}' for i, n in zip(ids, _counts(p, tasks)))}),"
          f" recorded into {p.origin.experiment!r} at {ctx.uri}", flush=True)
    _tag_parent(sweep, array, ids)
    try:
        ended = wait(submitted, sweep, [_counts(p, [t])[0] for t in tasks], sum(map(len, p.batches)))
    except BaseException:  # Ctrl-C, SIGTERM, a queue that stopped answering: the tasks stop too
        from gradlab import signals

        with signals.deferred():  # their runs end KILLED before the sweep's parent does
            _cancel(array)
        raise
    lost = []
    for task, job, (state, result) in zip(tasks, submitted, ended):
        if isinstance(result, tuple):
            result, failures = result
            for f in failures:  # a run whose record failed: the sweep failed (Sweep.finish)
                print(f"gradlab: error: recording a run in Slurm task {job.job_id}: {f}", file=sys.stderr)
                sweep.tags.setdefault("gradlab.error.message", f"recording a run in Slurm task {job.job_id} failed: {f}")
            lost += [job.job_id] if failures else []
            for batch, outcomes in zip(task, result):
                for k, (value, error) in zip(batch, outcomes):
                    p.job_return(k, value if error is None else TaskLost(error), error is not None)
            errors = Counter(error for outcomes in result for _, error in outcomes if error is not None)
            lost += [job.job_id] if errors else []
            for text, n in errors.items():
                print(f"gradlab: error: {text} ({n} job{'s' if n != 1 else ''}; Slurm says {state})", file=sys.stderr)
        else:
            why = (f"Slurm task {job.job_id} ended {state} before its jobs had a result"
                   + (f": {result}" if result else ""))
            print(f"gradlab: error: {why}", file=sys.stderr)
            for batch in task:
                for k in batch:
                    p.job_return(k, TaskLost(why), True)
            lost.append(job.job_id)
    if lost:
        _end_left_running(sweep, ctx, sorted(set(lost)))
    sweep.progress_end()
    return p.returns()


def _refusal(error: Exception) -> str:
    """Why the job could not be submitted, in one line, with what to check."""
    import shutil

    if shutil.which("sbatch") is None:
        return "sbatch is not installed here: batched_slurm submits from a Slurm login node (or: make cluster)"
    conf = os.environ.get("SLURM_CONF", "/etc/slurm/slurm.conf")
    if not os.path.exists(conf):
        return (f"no Slurm configuration at {conf}: export SLURM_CONF=... "
                "(make cluster prints the line for its cluster)")
    said = [line.removeprefix("sbatch: error: ") for line in str(error).strip().splitlines() if line.strip()]
    return (f"sbatch refused the sweep's job: {'; '.join(said[:2]) or type(error).__name__} "
            "(hydra.launcher.partition, account, qos, gres, mem_gb, timeout_min?)")


def _skip_finished(p: Prepared, sweep) -> None:
    """With tracking.skip_finished, the jobs that already have a result are answered here and
    left out of the batches: only the others are packed into tasks (a resumed sweep)."""
    from gradlab.record import finished

    asked = [k for k, job in enumerate(p.jobs) if job.cfg.tracking.skip_finished]
    if not asked or sweep.recorder is None:
        return
    done = {asked[i]: rec for i, rec in finished(sweep.recorder, [p.jobs[k] for k in asked], p.origin).items()}
    for k, rec in done.items():
        p.job_return(k, rec.objective, False)
    p.batches = [b for b in ([k for k in batch if k not in done] for batch in p.batches) if b]
    if done:
        print(f"gradlab: {_jobs(len(done))} already with a result in {p.origin.experiment!r}: skipped", flush=True)


def pack(p: Prepared, tasks: int) -> list[list[list[int]]]:
    """The batches (positions in p.jobs) dealt into at most `tasks` tasks, each task's batches
    in the sweep's order: the largest batch first to the task with the fewest jobs. Fewer batches
    than tasks: the largest are halved until there are enough (batched results equal each job
    alone, so a batch may be split anywhere)."""
    batches = [list(b) for b in p.batches]
    while len(batches) < tasks and max(len(b) for b in batches) > 1:
        big = max(range(len(batches)), key=lambda i: len(batches[i]))
        b = batches.pop(big)
        batches[big:big] = [b[:len(b) // 2], b[len(b) // 2:]]
    n = min(tasks, len(batches))
    load, dealt = [0] * n, [[] for _ in range(n)]
    for i in sorted(range(len(batches)), key=lambda i: -len(batches[i])):
        t = min(range(n), key=lambda t: load[t])
        dealt[t].append(i)
        load[t] += len(batches[i])
    return [[batches[i] for i in sorted(d)] for d in dealt]


def _jobs(n: int) -> str:
    return f"{n} job{'s' if n != 1 else ''}"


def _counts(p: Prepared, tasks) -> list[int]:
    return [sum(len(b) for b in task) for task in tasks]


def _portable(job):
    """A job as a task receives it: a search's watch stays here (its study lives in this process)."""
    return replace(job, watch=None)


def _executor(settings: SlurmSettings, sweep_dir: str, name: str):
    import submitit

    folder = settings.folder.replace("${hydra.sweep.dir}", sweep_dir)
    executor = submitit.SlurmExecutor(folder=folder)
    extra = dict(settings.additional_parameters or {})
    executor.update_parameters(
        job_name=f"gradlab-{name}", time=int(settings.timeout_min), cpus_per_task=int(settings.cpus_per_task),
        array_parallelism=int(settings.array_parallelism), stderr_to_stdout=True,
        **{k: v for k, v in {"partition": settings.partition, "gres": settings.gres, "account": settings.account,
                             "qos": settings.qos, "mem": f"{round(settings.mem_gb * 1024)}M" if settings.mem_gb else None}.items()
           if v is not None},
        **({"additional_parameters": extra} if extra else {}))
    return executor


def _tag_parent(sweep, array: str, ids: list[str]) -> None:
    """The parent run names its Slurm jobs and tasks (a search submits a job per batch of trials)."""
    jobs = [j for j in sweep.tags.get("gradlab.slurm.jobs", "").split(",") if j] + [array]
    tasks = [t for t in sweep.tags.get("gradlab.slurm.tasks", "").split(",") if t] + ids
    tags = {"gradlab.slurm.jobs": ",".join(jobs), "gradlab.slurm.tasks": ",".join(tasks)}
    sweep.annotate(tags)
    if sweep.recorder is not None and sweep.key is not None:
        sweep.recorder.tag(sweep.key, tags)  # seen while the sweep runs, not only at its end


# ---------------------------------------------------------------------------- waiting
def wait(submitted: list, sweep, counts: list[int], total: int) -> list[tuple[str, object]]:
    """Until every task has left the queue: (Slurm's state, its result: a list of outcomes per
    batch, or what went wrong) per task. Progress as tasks end."""
    ended: dict[int, tuple[str, object]] = {}
    failing_since = None
    done = 0
    while len(ended) < len(submitted):
        queued = _queued(submitted[0].job_id.split("_")[0])
        if queued is None:
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since > QUEUE_PATIENCE:
                raise TaskLost(f"squeue has not answered for {QUEUE_PATIENCE:.0f} s: is slurmctld running? (the tasks are cancelled)")
        else:
            failing_since = None
        for i, job in enumerate(submitted):
            if i in ended:
                continue
            finished = job.paths.result_pickle.exists()
            if not finished and (queued is None or job.job_id in queued):
                continue
            ended[i] = _outcome(job, queued)
            done += counts[i]
            sweep.progress(done, total, 0)
        if len(ended) < len(submitted):
            time.sleep(POLL_SECONDS)
    return [ended[i] for i in range(len(submitted))]


def _queued(array: str) -> dict[str, str] | None:
    """The tasks of this array job still in the queue (pending, running, completing): id -> state;
    None if squeue did not answer."""
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-j", array, "-o", "%i %T"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # a job id the controller has already forgotten: nothing of it is queued
        return {} if "Invalid job id" in out.stderr else None
    return dict(line.split(None, 1) for line in out.stdout.splitlines() if line.strip())


def _outcome(job, queued) -> tuple[str, object]:
    """A task that left the queue: its result, else its state and the last line of its log."""
    for _ in range(20):  # a task that has just ended may be writing its result
        if job.paths.result_pickle.exists():
            break
        time.sleep(0.1)
    state = _state(job.job_id)
    if job.paths.result_pickle.exists():
        try:
            return state, job.result()
        except Exception as e:  # noqa: BLE001 - the task raised (a crash outside any batch): its jobs fail
            return state, f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
    return state, ""


def _state(task_id: str) -> str:
    """Slurm's state of a task (scontrol remembers ended jobs for MinJobAge seconds)."""
    try:
        out = subprocess.run(["scontrol", "show", "job", "-o", task_id], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "UNKNOWN"
    for word in out.split():
        if word.startswith("JobState="):
            return word.split("=", 1)[1]
    return "UNKNOWN"


def _cancel(array: str, patience: float = 90.0) -> None:
    """scancel the job, then wait (at most `patience` s) until its tasks have left the queue:
    each has written its runs' ends by then."""
    try:
        subprocess.run(["scancel", array], capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        print(f"gradlab: error: could not cancel Slurm job {array}: scancel {array}", file=sys.stderr)
        return
    print(f"gradlab: cancelled Slurm job {array}; waiting for its tasks to end their runs", file=sys.stderr, flush=True)
    end = time.monotonic() + patience
    while time.monotonic() < end and _queued(array) != {}:
        time.sleep(POLL_SECONDS)


def _end_left_running(sweep, ctx: SweepContext, lost: list[str]) -> None:
    """Runs of these tasks that no one ended (their task and its recorders died hard, or a run's
    record failed as it was made): KILLED. Every task is over: its recorders have ended."""
    from gradlab.tracking import ends

    if not ctx.parent_id:
        return
    ended = ends.kill_running_children(ctx.uri, ctx.parent_id, "gradlab.slurm.task", set(lost),
                                       "its Slurm task ended without writing the run's end (see the task's log)")
    if ended:
        print(f"gradlab: {ended} run(s) of Slurm task(s) {', '.join(lost)} were left RUNNING: ended KILLED", file=sys.stderr)


# ------------------------------------------------------------------------------- a task
def run_task(context: SweepContext, batches: list, n_recorders: int) -> tuple[list[list[tuple[object, str | None]]], list[str]]:
    """One Slurm array task: its batches trained one after another and each job recorded as a
    child of the sweep in `context`. Returns, per batch, per job: (objective, None), or (None, why
    it has no result); and what its recorders said failed. SIGTERM (scancel, the time limit)
    stops it: the runs in training end KILLED."""
    from gradlab import signals
    from gradlab.record import record_group
    from gradlab.tracking import REGISTRY

    os.environ.pop(VARIABLE, None)  # the sweep is `context`, whatever the submitting shell held
    os.environ["MLFLOW_TRACKING_URI"] = context.uri
    task = _task_id()
    origin = context.origin()
    results: list[list[tuple[object, str | None]]] = []
    failures: list[str] = []
    print(f"gradlab: Slurm task {task}: {sum(len(b) for b in batches)} jobs in {len(batches)} batches", flush=True)
    # submitit ignores SIGTERM, and on SIGUSR2 (its warning, sent up to a minute before the
    # 90 s it asks for before the time limit, or on preemption) requeues the task or raises in
    # the middle of an epoch. Here SIGTERM (scancel; the time limit and preemption send it too)
    # stops the task: its runs in training end KILLED at the end of their epoch, the batches
    # after it never start; SIGUSR2 is only said.
    signal.signal(signal.SIGUSR2, lambda signum, frame: print(
        f"gradlab: Slurm task {task}: SIGUSR2 (its time limit is near, or it is preempted): it trains on until SIGTERM",
        file=sys.stderr, flush=True))
    with signals.as_exceptions():
        try:
            pool = REGISTRY.pool(max(1, n_recorders))
            pool.open(context.uri)
            for batch in batches:
                for job in batch:
                    job.tags["gradlab.slurm.task"] = task
                try:
                    recorded = record_group(batch, origin, quiet=True, recorder=pool, wait=False)
                    results.append([(rec.objective, None) for rec in recorded])
                except Exception as e:  # noqa: BLE001 - as the batched launcher: this batch's jobs fail, the rest go on
                    print(f"gradlab: a batch of {len(batch)} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                    results.append([(None, f"{type(e).__name__}: {e}")] * len(batch))
                print(f"gradlab: Slurm task {task}: {len(results)}/{len(batches)} batches done", flush=True)
        except signals.Killed as e:
            why = f"Slurm task {task} was stopped by {signal.Signals(e.signum).name} (scancel, its time limit or preemption)"
            print(f"gradlab: {why}", file=sys.stderr, flush=True)
            training = len(results)
            results += [[(None, f"{why} while the job trained: its run is KILLED" if b == training else
                          f"{why} before the job started: it has no run")] * len(batch)
                        for b, batch in enumerate(batches[training:], start=training)]
        finally:
            with signals.deferred():
                failures += [f for rec in REGISTRY.everyone() for f in rec.failures()]
                try:
                    REGISTRY.sync_all()
                except Exception as e:  # noqa: BLE001 - said by the launcher, which ends what it left RUNNING
                    failures.append(str(e))
                for f in failures:
                    print(f"gradlab: recording failed in Slurm task {task}: {f}", file=sys.stderr, flush=True)
                REGISTRY.end_orphans()
                REGISTRY.shutdown()
    return results, failures


def _task_id() -> str:
    """This task's Slurm id, as squeue shows it (array job _ index)."""
    array, index = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    return f"{array}_{index}" if array and index else os.environ.get("SLURM_JOB_ID", "unknown")

