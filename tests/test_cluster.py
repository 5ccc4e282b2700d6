"""Beyond one machine, for real: `make cluster` (a one-node Slurm cluster and an MLflow server on
PostgreSQL, on 127.0.0.1) and `hydra/launcher=batched_slurm` against it. No mocks: the module's
fixture runs `make cluster` itself (as CI does) and `make cluster-down` at the end.

It needs root and apt-get (Debian's slurm-wlm, munge, postgresql); elsewhere it is skipped with
the reason, and under CI it fails instead."""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from conftest import ROOT, start, wait_for

# its own state folder: a developer's `make cluster` (.cluster/) is left alone; outside a checkout
# that other users cannot enter (under /root), which munged and PostgreSQL (their own users) must
STATE = (ROOT / ".cluster-test" if all(os.stat(p).st_mode & 0o001 for p in [ROOT, *ROOT.parents])
         else Path("/var/tmp/gradlab-cluster-test"))
GRID = ["optimizer=sgd,adam", "optimizer.lr=1e-3,3e-3,1e-2", "data.scaling=factor,standardize", "train.epochs=300",
        "train.dtype=float64", "tracking.plots=none"]


def _unable() -> str | None:
    if os.geteuid() != 0:
        return "the cluster tests need root: make cluster installs Debian packages and runs munged and PostgreSQL as their users"
    have = all(shutil.which(c) for c in ("munged", "slurmctld", "slurmd", "sbatch")) and any(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if not have and not shutil.which("apt-get"):
        return "the cluster tests need apt-get to install slurm-wlm, munge and postgresql (not installed here)"
    return None


# One worker runs the module: one cluster, started and stopped once by its fixture (make test runs -n).
pytestmark = pytest.mark.xdist_group("cluster")


@pytest.fixture(scope="module")
def cluster():
    """The environment a sweep needs to use the cluster (SLURM_CONF, MLFLOW_TRACKING_URI)."""
    why = _unable()
    if why:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"under CI the cluster tests must run: {why}")
        pytest.skip(why)
    make = ["make", "--no-print-directory", f"VENV={sys.prefix}", f"CLUSTER_DIR={STATE}"]
    began = time.monotonic()
    up = subprocess.run([*make, "cluster"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        print(f"make cluster: {time.monotonic() - began:.1f} s")
        exports = dict(line.split("export ", 1)[1].split("=", 1) for line in up.stdout.splitlines() if "export " in line)
        assert set(exports) == {"SLURM_CONF", "MLFLOW_TRACKING_URI"}, up.stdout
        assert "make sweep" in up.stdout and str(STATE) in up.stdout
        again = subprocess.run([*make, "cluster"], cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert again.returncode == 0 and "started" not in again.stdout, again.stdout  # idempotent: nothing restarted
        yield exports
    finally:
        down = subprocess.run([*make, "cluster-down"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert down.returncode == 0, down.stdout + down.stderr
        for pidfile in ("mlflow/server.pid", "slurm/slurmctld.pid", "slurm/slurmd.pid", "munge/munged.pid",
                        "postgres/data/postmaster.pid"):
            assert not (STATE / pidfile).exists(), f"{pidfile} is left after make cluster-down"


def test_batches_are_packed_into_at_most_the_tasks_asked_largest_first_to_the_least_loaded():
    from gradlab.multirun.launch import Prepared
    from gradlab.multirun.slurm import pack

    def packed(batches, tasks):
        jobs = sorted(k for b in batches for k in b)
        return pack(Prepared("t", [], jobs, jobs, {}, batches, None), tasks)

    four = [[0, 1, 2, 3, 4, 5], [6, 7], [8, 9, 10], [11]]
    assert packed(four, 2) == [[[0, 1, 2, 3, 4, 5]], [[6, 7], [8, 9, 10], [11]]]  # 6 and 6 jobs, batches in order
    assert packed([[0]], 4) == [[[0]]]  # never more tasks than jobs
    for tasks in (1, 2, 3, 5, 9, 12, 20):
        got = packed(four, tasks)
        assert len(got) == min(tasks, 12)  # fewer batches than tasks: the largest are split
        assert sorted(k for task in got for batch in task for k in batch) == list(range(12))  # each job once
        # a split batch is a piece of one batch, in its order
        assert all(any(batch == b[b.index(batch[0]):b.index(batch[0]) + len(batch)] for b in four if batch[0] in b)
                   for task in got for batch in task)
        loads = [sum(map(len, task)) for task in got]
        assert max(loads) - min(loads) <= max(len(b) for task in got for b in task)


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(uri)


def _runs(uri: str, experiment: str) -> tuple[object, list]:
    """(the parent run, its children) of the only sweep in `experiment`."""
    c = _client(uri)
    exp = c.get_experiment_by_name(experiment)
    runs = c.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("gradlab.role") == "sweep"]
    assert len(parents) == 1
    return parents[0], [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]


def _by_overrides(children) -> dict[str, object]:
    found = {}
    for r in children:
        key = " ".join(sorted(o for o in r.data.tags["gradlab.overrides"].split() if not o.startswith("tracking.experiment")))
        assert key not in found, f"two runs of one job: {key}"
        found[key] = r
    return found


@pytest.mark.slow
def test_a_batched_slurm_sweep_records_every_child_once_on_the_postgres_server_as_the_local_launcher_does(cluster, tmp_path, temp_store):
    uri = cluster["MLFLOW_TRACKING_URI"]
    name = f"cluster_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **cluster}
    with start("-m", "hydra/launcher=batched_slurm", "hydra.launcher.tasks=3", *GRID, f"tracking.experiment={name}",
               f"hydra.sweep.dir={tmp_path}/slurm", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as p:
        out, err = p.communicate()
    assert p.returncode == 0, out + err
    assert "12 jobs in 2 batches" in out and "packed into 3 Slurm tasks of job" in out, out
    parent, children = _runs(uri, name)
    job = parent.data.tags["gradlab.slurm.jobs"]
    tasks = parent.data.tags["gradlab.slurm.tasks"].split(",")
    assert len(tasks) == 3 and all(t.startswith(f"{job}_") for t in tasks) and all(t in out for t in tasks)
    assert parent.info.status == "FINISHED" and parent.data.tags["gradlab.jobs_finished"] == "12"
    slurm = _by_overrides(children)
    assert len(slurm) == 12 and all(r.info.status == "FINISHED" for r in slurm.values())
    assert {r.data.tags["gradlab.slurm.task"] for r in slurm.values()} == set(tasks)
    one = next(iter(slurm.values())).info.run_id
    assert "history.csv" in {a.path for a in _client(uri).list_artifacts(one)}  # artifacts through the server

    # The same grid with the batched launcher in this process, into a SQLite store: the same numbers.
    with start("-m", "hydra/launcher=batched", *GRID, f"tracking.experiment={name}", f"hydra.sweep.dir={tmp_path}/local",
               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "MLFLOW_TRACKING_URI": temp_store}) as p:
        out, err = p.communicate()
    assert p.returncode == 0, out + err
    local = _by_overrides(_runs(temp_store, name)[1])
    assert set(local) == set(slurm)
    for key, run in slurm.items():
        theirs = local[key].data.metrics
        mine = {k: v for k, v in run.data.metrics.items() if k != "train_seconds"}
        assert set(mine) == set(theirs) - {"train_seconds"}, key
        for metric, value in mine.items():
            assert math.isclose(value, theirs[metric], rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(value) and math.isnan(theirs[metric])), \
                (key, metric, value, theirs[metric])


@pytest.mark.slow
def test_scancel_of_a_task_mid_training_leaves_its_runs_killed_and_the_sweep_says_so(cluster, tmp_path):
    uri = cluster["MLFLOW_TRACKING_URI"]
    name = f"cluster_kill_{uuid.uuid4().hex[:8]}"
    env = {**os.environ, **cluster}
    # two batches (their epochs differ), a task each: the long one is cancelled while it trains
    with start("-m", "hydra/launcher=batched_slurm", "hydra.launcher.tasks=2", "optimizer=sgd", "optimizer.lr=1e-3,1e-2",
               "train.epochs=200,20000000", "tracking.plots=none", f"tracking.experiment={name}",
               f"hydra.sweep.dir={tmp_path}/slurm", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as p:
        c = _client(uri)

        def long_runs_training():
            exp = c.get_experiment_by_name(name)
            if exp is None:
                return None
            runs = c.search_runs([exp.experiment_id], "tags.`gradlab.overrides` LIKE '%20000000%'")
            # training for a while: its first step metrics are in the store
            return runs if len(runs) == 2 and all(c.get_metric_history(r.info.run_id, "train_loss") for r in runs) else None

        long = wait_for(long_runs_training, timeout=120, every=0.5, proc=p)
        task = long[0].data.tags["gradlab.slurm.task"]
        assert subprocess.run(["scancel", task], env=env, capture_output=True).returncode == 0
        out, err = p.communicate()
    assert p.returncode == 1, out + err
    parent, children = _runs(uri, name)
    assert parent.info.status == "FAILED"
    by_job = {r.data.tags["gradlab.overrides"]: r for r in children}
    assert len(by_job) == 4 and not [r for r in children if r.info.status == "RUNNING"]
    for overrides, r in by_job.items():
        if "20000000" in overrides:
            assert r.info.status == "KILLED" and r.data.tags["gradlab.outcome"] == "killed", overrides
            assert r.data.tags["gradlab.slurm.task"] == task
            assert 0 < r.data.metrics["epochs_run"] < 20000000  # its metrics so far are kept
            assert f"KILLED [{overrides}]" in out
        else:
            assert r.info.status == "FINISHED", overrides
    assert f"Slurm task {task} was stopped by SIGTERM" in err and "its run is KILLED" in err
    assert "Traceback" not in err
    assert "2 killed" in out


@pytest.mark.slow
def test_eight_writers_logging_one_dataset_at_once_on_postgres_lose_nothing(cluster, monkeypatch):
    """Runs of one experiment share a dataset row; writers that insert it at the same moment race
    between MLflow's look-up and its insert, and PostgreSQL refuses the loser's (duplicate key
    value violates unique constraint): the Store tries again and links the row the winner made."""
    import threading

    import numpy as np

    from gradlab.tracking import Store
    from gradlab.tracking.spec import RunSpec

    uri = cluster["MLFLOW_TRACKING_URI"]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    name = f"cluster_race_{uuid.uuid4().hex[:8]}"
    stores = [Store(uri) for _ in range(8)]
    x, y = np.arange(6.0).reshape(3, 2), np.arange(3.0)
    runs, errors = [], []
    for round_ in range(6):
        data = [{"name": "d-training", "context": "training", "features": x, "targets": y, "origin": {"round": round_},
                 "digest": f"r{round_}"}]
        go = threading.Barrier(len(stores))

        def write(store):
            try:
                go.wait()
                runs.append(store.start(RunSpec(name, f"r{round_}", {}, {}, inputs=data)))
            except Exception as e:  # noqa: BLE001 - the assertion below names it
                errors.append(e)

        threads = [threading.Thread(target=write, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not errors, errors[0]
    c = _client(uri)
    assert len(runs) == 48 and len(set(runs)) == 48
    for run_id in runs:
        run = c.get_run(run_id)
        assert [d.dataset.digest for d in run.inputs.dataset_inputs] == [f"r{run.info.run_name[1:]}"]


def test_rows_written_straight_into_postgres_read_back_as_mlflows_own(cluster):
    """tracking.bulk's rows (points, params, tags replaced with PostgreSQL's own upsert) in a
    PostgreSQL store opened directly, as a user's postgresql:// tracking URI opens it: the same
    comparison with MLflow's log_batch as test_bulk's on SQLite."""
    import psycopg

    from gradlab.tracking import Store
    from test_bulk import assert_rows_read_back_as_mlflows_own

    ports = dict(line.split("=", 1) for line in (STATE / "ports.env").read_text().split())
    password = (STATE / "postgres" / "password").read_text().strip()
    server = dict(host="127.0.0.1", port=ports["PG_PORT"], user="gradlab", password=password)
    name = f"gradlab_bulk_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        store = Store(f"postgresql+psycopg://gradlab:{password}@127.0.0.1:{ports['PG_PORT']}/{name}")
        assert store._sql.engine.dialect.name == "postgresql"
        assert_rows_read_back_as_mlflows_own(store)
        store._sql.engine.dispose()
    finally:
        with psycopg.connect(dbname="postgres", autocommit=True, **server) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.mark.slow
def test_a_job_slurm_refuses_is_one_line(cluster, tmp_path):
    env = {**os.environ, **cluster}
    with start("-m", "hydra/launcher=batched_slurm", "hydra.launcher.partition=nope", "optimizer.lr=1e-3,1e-2",
               "train.epochs=10", "tracking.plots=none", f"tracking.experiment=cluster_refused_{uuid.uuid4().hex[:8]}",
               f"hydra.sweep.dir={tmp_path}/slurm", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) as p:
        out, err = p.communicate()
    assert p.returncode == 1, out + err
    said = [line for line in err.splitlines() if line.startswith("gradlab: error:")]
    assert len(said) == 1 and "sbatch refused the sweep's job: invalid partition specified: nope" in said[0], err
    assert "Traceback" not in err and "sbatch: error" not in err
