"""A run's record written into a SQL store (SQLite, PostgreSQL) as rows of one transaction, and
a sweep's children, many runs' curves and their first steps at a threshold read back as rows.

MLflow's client validates an ORM object a metric point (about 0.1 ms a point here), and its
log_batch, log_inputs and set_terminated each read the whole run back first (about 10 ms a call
for a sweep's child, several calls a child). Inserted as rows into MLflow's own tables, a point
costs about 13 µs, and a run's params, tags, dataset links and end go in with its last rows. The
`latest_metrics` rows are kept by MLflow's own code (SqlAlchemyStore._update_latest_metrics_if_necessary).
MLflow's schema, below its public API: checked against mlflow 3.17 (tests/test_bulk.py compares
every point, latest value, param, tag, dataset link, status and child record with what MLflow's
own calls write and read). Where a point or param is there already (a retried write) the insert
fails whole and the caller logs through MLflow's own calls, which leave out what they have. Read
back, a thousand runs' curves come as plain rows, where get_metric_history_bulk builds an ORM
object a point (16 s for 380,000 points), and 10,000 children in about 5 s, where search_runs
took 27 s."""

from __future__ import annotations

import time

# Databases whose "insert, or on a key there already update" (a tag set again) this module writes.
UPSERTS = ("sqlite", "postgresql")


def sql_store(client):
    """The SqlAlchemyStore a client writes to, or None (a tracking server: its REST API only)."""
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    store = getattr(getattr(client, "_tracking_client", None), "store", None)
    return store if isinstance(store, SqlAlchemyStore) else None


def insert_rows(store, run_id: str, points: list, params: list, tags: list, status: str | None = None,
                inputs: list = ()) -> bool:
    """One run's rows in one transaction, checked by MLflow's own validators:
    - `points`, (key, value, timestamp, step) tuples of finite floats and ints (Store makes them
      so), and Params as new rows; RunTags inserted or replaced (set_tag's meaning);
    - `inputs`, DatasetInputs, linked as MLflow's log_inputs links them;
    - with `status` (FINISHED, FAILED, KILLED), the run's end as set_terminated writes it: its
      status and end time, nothing else.
    False, with nothing written, where MLflow's own calls must do it: a point or a param there
    already (a retried write), a run not active (MLflow says why), the run's name as a tag (MLflow
    keeps it on the run too), or a database whose upsert this does not know."""
    import importlib

    import sqlalchemy as sa
    from mlflow.entities import Metric, RunStatus
    from mlflow.exceptions import MlflowException
    from mlflow.store.tracking.dbmodels.models import SqlMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NAME
    from mlflow.utils.validation import _validate_batch_log_data, _validate_dataset_inputs, _validate_param_keys_unique

    dialect = store.engine.dialect.name
    if dialect not in UPSERTS or any(t.key == MLFLOW_RUN_NAME for t in tags):
        return False
    unique = dict.fromkeys(points)  # a point twice in one batch is one row, as log_batch keeps it
    # MLflow validates every point's key; a curve has a handful of keys and a thousand points, and
    # the values are floats and ints by construction: each key once, with its first point.
    firsts = {}
    for point in unique:
        firsts.setdefault(point[0], point)
    _, params, tags = _validate_batch_log_data([Metric(*p) for p in firsts.values()], params, tags)
    _validate_param_keys_unique(params)
    _validate_dataset_inputs(inputs)
    latest = {}  # key -> its point MLflow shows as latest: the largest (step, timestamp, value)
    for point in sorted(unique, key=lambda p: (p[3], p[2], p[1])):
        latest[point[0]] = point
    tag_values = {t.key: t.value for t in tags}  # the last of a key wins, as set_tag one after the other
    try:
        with store.ManagedSessionMaker(read_only=False) as session:
            runs = SqlRun.__table__
            stage, experiment_id = session.execute(sa.select(runs.c.lifecycle_stage, runs.c.experiment_id)
                                                   .where(runs.c.run_uuid == run_id)).first() or (None, None)
            if stage != "active":
                return False
            if inputs:
                _link_inputs(session, dialect, experiment_id, run_id, inputs)
            if status is not None:
                session.execute(sa.update(runs).where(runs.c.run_uuid == run_id)
                                .values(status=RunStatus.to_string(RunStatus.from_string(status)),
                                        end_time=int(time.time() * 1000)))
            if unique:
                session.execute(sa.insert(SqlMetric.__table__),
                                [{"run_uuid": run_id, "key": k, "value": v, "timestamp": t, "step": s, "is_nan": False}
                                 for k, v, t, s in unique])
                store._update_latest_metrics_if_necessary(
                    [SqlMetric(run_uuid=run_id, key=k, value=v, timestamp=t, step=s, is_nan=False)
                     for k, v, t, s in latest.values()], session)
            if params:
                session.execute(sa.insert(SqlParam.__table__),
                                [{"run_uuid": run_id, "key": p.key, "value": p.value} for p in params])
            if tag_values:
                upsert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert(SqlTag.__table__)
                session.execute(upsert.on_conflict_do_update(index_elements=["key", "run_uuid"],
                                                             set_={"value": upsert.excluded.value}),
                                [{"run_uuid": run_id, "key": k, "value": v} for k, v in tag_values.items()])
    except MlflowException as e:  # the session's error, MLflow's way: a duplicate is an IntegrityError
        if isinstance(e.__cause__, sa.exc.IntegrityError):
            return False
        raise
    return True


def _link_inputs(session, dialect: str, experiment_id: int, run_id: str, inputs: list) -> None:
    """MLflow's SqlAlchemyStore._log_inputs_impl for datasets, as rows: a dataset row per
    (experiment, name, digest), shared by every run that uses it, and the run's link to it with
    its tags. A dataset another writer inserts meanwhile is found, not inserted twice."""
    import importlib
    import uuid

    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlDataset, SqlInput, SqlInputTag

    wanted: dict[tuple[str, str], object] = {}
    for i in inputs:  # the first of a (name, digest) counts, as in MLflow
        wanted.setdefault((i.dataset.name, i.dataset.digest), i)
    datasets = SqlDataset.__table__
    insert = importlib.import_module(f"sqlalchemy.dialects.{dialect}").insert(datasets)
    session.execute(insert.on_conflict_do_nothing(index_elements=["experiment_id", "name", "digest"]),
                    [{"dataset_uuid": uuid.uuid4().hex, "experiment_id": experiment_id, "name": d.name,
                      "digest": d.digest, "dataset_source_type": d.source_type, "dataset_source": d.source,
                      "dataset_schema": d.schema, "dataset_profile": d.profile}
                     for d in (i.dataset for i in wanted.values())])
    uuids = {(name, digest): u for name, digest, u in session.execute(
        sa.select(datasets.c.name, datasets.c.digest, datasets.c.dataset_uuid)
        .where(datasets.c.experiment_id == experiment_id, datasets.c.name.in_([k[0] for k in wanted]),
               datasets.c.digest.in_([k[1] for k in wanted])))}
    links = SqlInput.__table__
    # Every column of the links' primary key: without source_id, SQLite scans every link of the
    # store (5 ms a run once a sweep has 10,000).
    linked = set(session.execute(sa.select(links.c.source_id).where(
        links.c.source_type == "DATASET", links.c.source_id.in_(list(uuids.values())), links.c.destination_type == "RUN",
        links.c.destination_id == run_id)).scalars())
    rows, tag_rows = [], []
    for key, i in wanted.items():
        if uuids[key] in linked:
            continue
        input_uuid = uuid.uuid4().hex
        rows.append({"input_uuid": input_uuid, "source_type": "DATASET", "source_id": uuids[key],
                     "destination_type": "RUN", "destination_id": run_id})
        tag_rows += [{"input_uuid": input_uuid, "name": t.key, "value": t.value} for t in i.tags]
    if rows:
        session.execute(sa.insert(links), rows)
    if tag_rows:
        session.execute(sa.insert(SqlInputTag.__table__), tag_rows)


def histories(store, run_ids: list[str], key: str, per_query: int) -> dict[str, list[tuple[int, float]]]:
    """run id -> [(step, value)] of metric `key`, in get_metric_history's order (time, step, value)."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    table = SqlMetric.__table__
    out: dict[str, list[tuple[int, float]]] = {rid: [] for rid in run_ids}
    with store.ManagedSessionMaker() as session:
        for i in range(0, len(run_ids), per_query):
            rows = session.execute(
                sa.select(table.c.run_uuid, table.c.step, table.c.value, table.c.is_nan)
                .where(table.c.run_uuid.in_(run_ids[i:i + per_query]), table.c.key == key)
                .order_by(table.c.run_uuid, table.c.timestamp, table.c.step, table.c.value))
            for run_id, step, value, is_nan in rows:
                out[run_id].append((step, float("nan") if is_nan else value))
    return out


def children(store, experiment_id: str, parent_id: str) -> list[tuple]:
    """The active runs of an experiment whose parent is `parent_id`, as search_runs finds them,
    each as (run id, name, experiment id, status, start time, params, latest metrics, tags):
    four queries, where search_runs builds ORM objects for every param, tag and metric (18.9 s
    for 10,000 runs here)."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlParam, SqlRun, SqlTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NAME

    runs, tags = SqlRun.__table__, SqlTag.__table__
    ids = (sa.select(runs.c.run_uuid).join(tags, tags.c.run_uuid == runs.c.run_uuid)
           .where(tags.c.key == MLFLOW_PARENT_RUN_ID, tags.c.value == parent_id,
                  runs.c.experiment_id == int(experiment_id), runs.c.lifecycle_stage == "active"))
    found: dict[str, tuple] = {}  # run id -> (name, experiment id, status, start time)
    values: dict[str, dict[str, dict]] = {"params": {}, "metrics": {}, "tags": {}}  # what -> run id -> key -> value
    with store.ManagedSessionMaker() as session:
        for run_id, name, exp, status, start in session.execute(
                sa.select(runs.c.run_uuid, runs.c.name, runs.c.experiment_id, runs.c.status, runs.c.start_time)
                .where(runs.c.run_uuid.in_(ids))):
            found[run_id] = (name, str(exp), status, start)
        # Each read sees what is written by then (no snapshot across them): a child started since
        # the first one is left out here, as if it had started after the read.
        latest = SqlLatestMetric.__table__
        for what, table in (("params", SqlParam.__table__), ("tags", tags), ("metrics", latest)):
            nan = table.c.is_nan if what == "metrics" else sa.false()  # MLflow keeps a NaN as 0 and this flag
            for run_id, key, v, is_nan in session.execute(sa.select(table.c.run_uuid, table.c.key, table.c.value, nan)
                                                          .where(table.c.run_uuid.in_(ids))):
                if run_id in found:
                    values[what].setdefault(run_id, {})[key] = float("nan") if is_nan else v
    out = []
    for run_id, (name, exp, status, start) in found.items():
        run_tags = values["tags"].get(run_id, {})
        # A run without a name is named by its tag, as MLflow's SqlRun.to_mlflow_entity names it.
        out.append((run_id, name or run_tags.get(MLFLOW_RUN_NAME), exp, status, start, values["params"].get(run_id, {}),
                    values["metrics"].get(run_id, {}), run_tags))
    return out


def first_steps_at_or_below(store, run_ids: list[str], key: str, threshold: float, per_query: int) -> dict[str, int]:
    """run id -> the smallest step at which metric `key` is at or below `threshold` (a NaN
    never is), for the runs that reached it: one row a run, where the curves are thousands."""
    import sqlalchemy as sa
    from mlflow.store.tracking.dbmodels.models import SqlMetric

    table = SqlMetric.__table__
    out: dict[str, int] = {}
    with store.ManagedSessionMaker() as session:
        for i in range(0, len(run_ids), per_query):
            out.update(session.execute(
                sa.select(table.c.run_uuid, sa.func.min(table.c.step))
                .where(table.c.run_uuid.in_(run_ids[i:i + per_query]), table.c.key == key,
                       table.c.is_nan == sa.false(), table.c.value <= threshold)
                .group_by(table.c.run_uuid)).all())
    return out
