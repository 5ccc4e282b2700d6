"""Step metrics, params and tags inserted as rows (tracking.bulk) against MLflow's own
MlflowClient.log_batch on a twin run: every point's history, every latest value, param and tag
the same, as MLflow reads them back; a point written twice (a retried write) kept once; what
MLflow refuses refused with MLflow's own words."""

import math
import time
from pathlib import Path

import pytest
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException

from gradlab.tracking import bulk, query
from gradlab.tracking.spec import RunEnd, RunSpec
from gradlab.tracking.store import Store


def points(n: int = 400):
    """Curves with ties and non-monotone steps, as a thinned history and its last epoch give them."""
    out = [("train_loss", 1.0 / (i + 1), i) for i in range(n)]
    out += [("val_loss", math.sin(i), i % 37) for i in range(n)]  # steps repeat: latest is by (step, time, value)
    out += [("param.w", 0.5, 3), ("param.w", 0.25, 3), ("param.w", float("nan"), 4)]
    return out


@pytest.fixture
def store(tmp_path):
    s = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert s._sql is not None  # the bulk path is the one taken
    return s


def twins(store):
    exp = store.experiment_id("bulk")
    return store.client.create_run(exp).info.run_id, store.client.create_run(exp).info.run_id


def read(store, run_id):
    client = store.client
    run = client.get_run(run_id)
    history = {k: sorted((m.step, m.timestamp, m.value) for m in client.get_metric_history(run_id, k))
               for k in ("train_loss", "val_loss", "param.w")}
    return run.data.metrics, history


def test_inserted_points_read_back_as_mlflows_own(store):
    ours, theirs = twins(store)
    store.log_points(ours, points())
    metrics = [Metric(k, v, 1_000, s) for k, v, s in points() if math.isfinite(v)]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        store.client.log_batch(theirs, metrics=metrics[start:start + 1000])
    our_latest, our_history = read(store, ours)
    their_latest, their_history = read(store, theirs)
    assert our_latest == their_latest
    assert {k: [(s, v) for s, _, v in h] for k, h in our_history.items()} == \
           {k: [(s, v) for s, _, v in h] for k, h in their_history.items()}
    # the largest step, 36, logged ten times at one time: MLflow keeps the largest value
    assert our_latest["val_loss"] == max(math.sin(i) for i in range(36, 400, 37))
    assert our_latest["param.w"] == 0.5  # step 3's two values: the larger, as MLflow orders them


def test_a_retried_write_keeps_each_point_once(store):
    ours, _ = twins(store)
    batch = [("train_loss", 0.5, 1), ("train_loss", 0.25, 2)]
    rows = [(k, v, 7, s) for k, v, s in batch]
    assert store._sql is not None
    assert bulk.insert_rows(store._sql, ours, rows, [], [])
    assert not bulk.insert_rows(store._sql, ours, rows, [], [])  # there already: nothing written
    store._write(ours, points=rows)  # ... and MLflow's own log_batch leaves the duplicates out
    assert [m.value for m in store.client.get_metric_history(ours, "train_loss")] == [0.5, 0.25]
    assert store.client.get_run(ours).data.metrics["train_loss"] == 0.25


def test_params_and_tags_as_rows_read_back_as_mlflows_own(store):
    assert_rows_read_back_as_mlflows_own(store)


def assert_rows_read_back_as_mlflows_own(store):
    """A start's params, an end's params with tags that replace some of the start's, and a
    parameter sent again (a retried write), as rows and through MlflowClient.log_batch (also on
    PostgreSQL: tests/test_cluster.py)."""
    assert store._sql is not None  # the rows' path is the one taken
    ours, theirs = twins(store)
    first = ({"lr": "0.1", "optimizer": "adam", "note": "x" * 6000},
             {"gradlab.outcome": "running", "a": "1", "long": "y" * 10_000})  # past MLflow's longest: cut as it cuts
    end = ({"verdict": "converged"}, {"gradlab.outcome": "completed", "b": "2"})
    metric = [Metric("loss", 0.5, 7, 0)]
    store._write(ours, params=first[0], tags=first[1])
    store._write(ours, params=end[0], tags=end[1], points=[("loss", 0.5, 7, 0)])
    store._write(ours, params={"lr": "0.1"})  # the same value again: MLflow's own path, no error
    for params, tags in (first, end):
        store.client.log_batch(theirs, params=[Param(k, v) for k, v in params.items()],
                               tags=[RunTag(k, v) for k, v in tags.items()], metrics=metric if params is end[0] else [])
    ours_run, theirs_run = store.client.get_run(ours).data, store.client.get_run(theirs).data
    assert ours_run.params == theirs_run.params == {"lr": "0.1", "optimizer": "adam", "note": "x" * 6000,
                                                    "verdict": "converged"}
    skip = {"mlflow.runName", "mlflow.user"}
    assert {k: v for k, v in ours_run.tags.items() if k not in skip} == \
           {k: v for k, v in theirs_run.tags.items() if k not in skip} == \
           {"gradlab.outcome": "completed", "a": "1", "b": "2", "long": "y" * 8000}
    assert ours_run.metrics == theirs_run.metrics == {"loss": 0.5}
    store.log_points(ours, points())  # and a curve, as test_inserted_points_read_back_as_mlflows_own checks it
    metrics = [Metric(k, v, 1_000, s) for k, v, s in points() if math.isfinite(v)]
    for start in range(0, len(metrics), 1000):  # MLflow's batch limit
        store.client.log_batch(theirs, metrics=metrics[start:start + 1000])
    (our_latest, our_history), (their_latest, their_history) = read(store, ours), read(store, theirs)
    assert our_latest == their_latest
    assert {k: [(s, v) for s, _, v in h] for k, h in our_history.items()} == \
           {k: [(s, v) for s, _, v in h] for k, h in their_history.items()}


def test_what_mlflow_refuses_is_refused_in_its_words(store):
    ours, theirs = twins(store)
    store._write(ours, params={"lr": "0.1"})
    with pytest.raises(MlflowException, match="Changing param values is not allowed"):
        store._write(ours, params={"lr": "0.2"})
    with pytest.raises(MlflowException, match="Invalid value .bad!key"):
        store._write(ours, tags={"bad!key": "y"})
    with pytest.raises(MlflowException, match="Invalid value .bad!metric"):  # a curve's keys are checked too
        store._write(ours, points=[("loss", 0.5, 7, 0), ("bad!metric", 0.5, 7, 0)])
    store.client.delete_run(theirs)
    with pytest.raises(MlflowException, match="must be in the 'active' state"):
        store._write(theirs, params={"lr": "0.1"})
    assert store.client.get_run(ours).data.params == {"lr": "0.1"}


def test_curves_read_as_rows_are_mlflows_bulk_read(store):
    runs = twins(store) + twins(store)
    for n, run_id in enumerate(runs):
        store.log_points(run_id, [("train_loss", 1.0 / (i + n + 1), i) for i in range(50 + n)])
    store.client.log_metric(runs[0], "train_loss", float("nan"), step=99)  # MLflow keeps a NaN as such
    theirs = {rid: [] for rid in runs}
    for m in store.client._tracking_client.store.get_metric_history_bulk(runs, "train_loss", max_results=10**6):
        theirs[m.run_id].append((m.step, m.value))
    ours = query.metric_histories(store, runs, "train_loss", per_query=3)  # pages of 3 runs
    assert {k: [(s, repr(v)) for s, v in h] for k, h in ours.items()} == \
           {k: [(s, repr(v)) for s, v in h] for k, h in theirs.items()}
    assert len(ours[runs[3]]) == 53 and math.isnan(ours[runs[0]][-1][1])


def test_a_runs_files_land_where_mlflow_says_its_artifacts_are(store, tmp_path):
    """Files written at a run's start and end go to its own artifact location (found from the run
    MLflow made, not read back), here an experiment's own folder, as MLflow's client lists them."""
    elsewhere = tmp_path / "elsewhere"
    store.client.create_experiment("own-place", artifact_location=elsewhere.as_uri())
    run_id = store.start(RunSpec("own-place", "r", {"a": "1"}, {}, files={"config.yaml": "a: 1\n"}))
    store.finish(run_id, RunEnd("completed", {"loss": 0.5}), {"more/history.csv": "epoch\n1\n"})
    listed = {a.path for a in store.client.list_artifacts(run_id)} | {a.path for a in store.client.list_artifacts(run_id, "more")}
    assert {"config.yaml", "more/history.csv"} <= listed
    assert (elsewhere / run_id / "artifacts" / "config.yaml").read_text() == "a: 1\n"
    assert store.client.get_run(run_id).info.status == "FINISHED"


def test_a_run_ended_with_its_rows_reads_back_as_set_terminated_ends_it(store):
    """finish ends the run in the same transaction as its last rows: the status and end time a
    twin gets from MlflowClient.set_terminated, and nothing else of the run changed."""
    exp = store.experiment_id("bulk")
    ours = store.start(RunSpec("bulk", "ours", {"lr": "0.1"}, {"a": "1"}))
    theirs = store.start(RunSpec("bulk", "theirs", {"lr": "0.1"}, {"a": "1"}))
    store._write(theirs, params={"outcome": "diverged"}, tags={"b": "2"}, points=[("loss", 0.5, 7, 0)])
    before = int(time.time() * 1000)
    terminated = store.client.set_terminated
    store.client.set_terminated = None  # ours must not need it: its end is in its rows' transaction
    store.finish(ours, RunEnd("diverged", {"loss": 0.5}, tags={"b": "2"}, params={"outcome": "diverged"}), {})
    terminated(theirs, "FAILED")
    after = int(time.time() * 1000)
    our, their = store.client.get_run(ours), store.client.get_run(theirs)
    assert our.info.status == their.info.status == "FAILED"
    assert before <= our.info.end_time <= after and before <= their.info.end_time <= after
    assert our.info.lifecycle_stage == their.info.lifecycle_stage == "active"
    assert our.data.params == their.data.params and our.data.metrics == their.data.metrics == {"loss": 0.5}
    skip = {"mlflow.runName", "mlflow.user", "gradlab.outcome"}
    assert {k: v for k, v in our.data.tags.items() if k not in skip} == {k: v for k, v in their.data.tags.items() if k not in skip}
    assert [r.info.run_id for r in store.client.search_runs([exp], "attributes.status = 'FAILED'")] != []


def test_an_end_whose_files_cannot_be_written_keeps_its_metrics_and_ends_the_run(store, tmp_path):
    """The files go first; where they fail (here a file stands where their folder must be), the
    run's final metrics, tags and status are written all the same, and the error is raised."""
    run_id = store.start(RunSpec("bulk", "r", {"a": "1"}, {}))
    folder = Path(store.client.get_run(run_id).info.artifact_uri.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "more").write_text("in the way")
    with pytest.raises(OSError):
        store.finish(run_id, RunEnd("completed", {"loss": 0.25}), {"more/history.csv": "epoch\n1\n"})
    run = store.client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"loss": 0.25}
    assert run.data.tags["gradlab.outcome"] == "completed"


def test_a_parents_children_read_as_rows_are_search_runs_own(store):
    """query.children reads a sweep's children as rows: the same records search_runs gives, a
    NaN latest value, typed params and every tag included; a deleted child, another parent's
    child and the parent itself left out."""
    parent = store.start(RunSpec("bulk", "parent", {}, {"gradlab.role": "sweep"}))
    other = store.start(RunSpec("bulk", "other", {}, {}))
    kids = [store.start(RunSpec("bulk", f"kid{i}", {"lr": str(0.1 * i), "opt": "adam", "n": str(i)},
                                {"gradlab.config_hash": f"h{i}"}, parent_id=parent)) for i in range(5)]
    store.start(RunSpec("bulk", "stranger", {"lr": "1"}, {}, parent_id=other))
    for i, kid in enumerate(kids[:4]):
        store.finish(kid, RunEnd("completed" if i else "diverged", {"val_loss": 0.5 / (i + 1)}, tags={"t": str(i)}), {})
    store.client.log_metric(kids[1], "grad_norm", float("nan"), step=3)
    store.client.delete_run(kids[2])
    exp = store.experiment_id("bulk")
    ours = query.children(store, parent)
    theirs = sorted(query._search(store, [exp], f"tags.mlflow.parentRunId = '{parent}'"), key=lambda r: (r.start_time, r.id))
    assert [r.id for r in ours] == [r.id for r in theirs] and {r.id for r in ours} == set(kids) - {kids[2]}
    assert [repr(r) for r in ours] == [repr(r) for r in theirs]  # repr: a NaN equals itself there
    by_id = {r.id: r for r in ours}
    assert math.isnan(by_id[kids[1]].metrics["grad_norm"]) and by_id[kids[1]].params == {"lr": 0.1, "opt": "adam", "n": 1}
    assert [by_id[k].status for k in (kids[0], kids[1], kids[3], kids[4])] == ["FAILED", "FINISHED", "FINISHED", "RUNNING"]
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlRun

    runs = SqlRun.__table__
    with store._sql.ManagedSessionMaker() as session:  # a run without a name (an old store): its tag names it
        session.execute(sa.update(runs).where(runs.c.run_uuid == kids[0]).values(name=""))
    names = {r.id: r.name for r in query._search(store, [exp], f"tags.mlflow.parentRunId = '{parent}'")}
    assert {r.id: r.name for r in query.children(store, parent)} == names and names[kids[0]] == "kid0"


def test_datasets_linked_as_rows_read_back_as_log_inputs_own(store):
    """A run's datasets linked as rows in its start's write: the inputs MLflow's log_inputs gives a
    twin (dataset, source, schema, profile, tags); one dataset row per (experiment, name, digest),
    shared with a run MLflow linked first, as it shares them."""
    import numpy as np

    x, y = np.arange(6.0).reshape(3, 2), np.arange(3.0)
    data = [{"name": "d-training", "context": "training", "features": x, "targets": y, "origin": {"a": "b"}, "digest": "d1"},
            {"name": "d-validation", "context": "validation", "features": x[:1], "targets": y[:1], "origin": {"a": "b"},
             "digest": "d2"}]
    theirs = store.client.create_run(store.experiment_id("bulk")).info.run_id
    store.client.log_inputs(theirs, datasets=Store.dataset_inputs(data[:1]))  # MLflow made d1's row
    ours = store.start(RunSpec("bulk", "ours", {"lr": "0.1"}, {}, inputs=data))
    store.client.log_inputs(theirs, datasets=Store.dataset_inputs(data[1:]))  # ... and found d2's, made by rows

    def inputs(run_id):
        return sorted((d.dataset.name, d.dataset.digest, d.dataset.source_type, d.dataset.source, d.dataset.schema,
                       d.dataset.profile, [(t.key, t.value) for t in d.tags])
                      for d in store.client.get_run(run_id).inputs.dataset_inputs)

    assert inputs(ours) == inputs(theirs) and [i[0] for i in inputs(ours)] == ["d-training", "d-validation"]
    assert [i[6] for i in inputs(ours)] == [[("mlflow.data.context", "training")], [("mlflow.data.context", "validation")]]
    assert store.client.get_run(ours).data.params == {"lr": "0.1"}
    with store._sql.ManagedSessionMaker() as session:
        from mlflow.store.tracking.dbmodels.models import SqlDataset
        assert session.query(SqlDataset).count() == 2


def test_first_steps_at_or_below_a_threshold_are_counted_as_the_histories_give_them(store):
    """The first step each run's curve is at or below a threshold, counted by the store, equals
    the one read off MLflow's own get_metric_history; a NaN never counts, a run that never gets
    there is absent; and through the histories (a server's path) the same."""
    runs = twins(store) + twins(store)
    curves = [[("train_loss", 1.0 / (i + 1), i) for i in range(50)],  # at or below 0.1 from step 9
              [("train_loss", 5.0 - 0.1 * i, i) for i in range(20)],  # never
              [("train_loss", 0.1, 7), ("train_loss", 0.05, 3), ("train_loss", 0.2, 1)],  # unordered steps
              [("train_loss", 0.3, 0)]]
    for run_id, curve in zip(runs, curves):
        store.log_points(run_id, curve)
    store.client.log_metric(runs[3], "train_loss", float("nan"), step=1)  # stored as 0 with is_nan
    expected = {}
    for run_id in runs:
        hits = [m.step for m in store.client.get_metric_history(run_id, "train_loss") if m.value <= 0.1]
        if hits:
            expected[run_id] = min(hits)
    assert expected == {runs[0]: 9, runs[2]: 3}
    assert query.first_steps_at_or_below(store, runs, "train_loss", 0.1, per_query=3) == expected
    store._sql = None
    assert query.first_steps_at_or_below(store, runs, "train_loss", 0.1) == expected


def test_children_read_while_the_sweep_starts_another_are_read_whole(store, tmp_path):
    """A child started by another writer between the reads of runs and of their params, tags and
    metrics (a sweep still running) is left out, not a KeyError, and the others come whole."""
    import sqlalchemy as sa

    parent = store.start(RunSpec("bulk", "parent", {}, {}))
    first = store.start(RunSpec("bulk", "first", {"lr": "0.1"}, {"a": "1"}, parent_id=parent))
    other_writer = Store(store.uri)
    started = []

    def start_another(conn, cursor, statement, *args):
        if statement.startswith("SELECT params.run_uuid") and "IN (SELECT runs.run_uuid" in statement and not started:
            started.append(other_writer.start(RunSpec("bulk", "late", {"lr": "1"}, {}, parent_id=parent)))

    sa.event.listen(store._sql.engine, "before_cursor_execute", start_another)
    try:
        got = query.children(store, parent)
    finally:
        sa.event.remove(store._sql.engine, "before_cursor_execute", start_another)
    assert started and [r.id for r in got] == [first]
    assert got[0].params == {"lr": 0.1} and got[0].tags["a"] == "1"
    assert {r.id for r in query.children(store, parent)} == {first, started[0]}  # read again: both
